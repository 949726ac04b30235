module workerpool

// Standard library only: nothing to download.
go 1.19
