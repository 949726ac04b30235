// Package demoflags is the Go programs' command-line plumbing, as demo_args.py is the Python
// demos': the same flags with the same defaults, and a user's mistake reported on one line with
// exit status 2 instead of the flag package's usage block. It is not part of any stage's lesson.
package demoflags

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"time"
)

// Upper bounds for absurd input. Each program allocates per job and per worker up front (a
// channel with room for every job, a goroutine per worker), so a typo such as --jobs 1e12 would
// otherwise end in an out-of-memory crash rather than a message.
const (
	maxJobs     = 1_000_000
	maxWorkers  = 100_000
	maxCapacity = 1_000_000
	// time.Duration counts nanoseconds in an int64; beyond this a conversion would overflow.
	maxWorkSeconds = 1e9
)

// Command is one program's flag set plus the checks its values must pass after parsing.
type Command struct {
	flags       *flag.FlagSet
	description string
	checks      []func() error
}

// New starts the flags of the program named in os.Args[0], with a one-line description for --help.
func New(description string) *Command {
	name := filepath.Base(os.Args[0])
	flags := flag.NewFlagSet(name, flag.ContinueOnError)
	// The flag package prints its own error and the whole usage to stderr on a bad flag; Parse
	// below prints one line instead, so the package is told to print nothing.
	flags.SetOutput(io.Discard)
	flags.Usage = func() {}
	return &Command{flags: flags, description: description}
}

// usage is what --help prints, on stdout as Python's argparse does.
func (c *Command) usage() {
	fmt.Printf("usage: %s [flags]\n\n%s\n\nflags (-name and --name both work):\n",
		c.flags.Name(), c.description)
	c.flags.SetOutput(os.Stdout)
	c.flags.PrintDefaults()
}

// Int defines an integer flag whose value must lie in [minimum, maximum].
func (c *Command) Int(name string, value, minimum, maximum int, usage string) *int {
	number := c.flags.Int(name, value, usage)
	c.checks = append(c.checks, func() error {
		if *number < minimum || *number > maximum {
			return fmt.Errorf("-%s must be between %d and %d, got %d", name, minimum, maximum, *number)
		}
		return nil
	})
	return number
}

// Workers defines --workers, the number of goroutines (default 3, as in the post).
func (c *Command) Workers(usage string) *int {
	return c.Int("workers", 3, 1, maxWorkers, usage)
}

// Jobs defines --jobs, the number of jobs 1..N (default 9, as in the post).
func (c *Command) Jobs(usage string) *int {
	return c.Int("jobs", 9, 0, maxJobs, usage)
}

// Capacity defines a channel's capacity; 0 is an unbuffered channel.
func (c *Command) Capacity(name string, usage string) *int {
	return c.Int(name, 100, 0, maxCapacity, usage)
}

// WorkSeconds defines --work-seconds, the simulated work per job (default 0.3 s, as in Python).
func (c *Command) WorkSeconds() *time.Duration {
	seconds := c.flags.Float64("work-seconds", 0.3,
		"simulated work per job, in seconds; 0.3 lets each of 3 workers do about 3 of 9 jobs")
	work := new(time.Duration)
	c.checks = append(c.checks, func() error {
		// NaN fails every comparison, so this also refuses "nan".
		if !(*seconds >= 0 && *seconds <= maxWorkSeconds) {
			return fmt.Errorf("-work-seconds must be between 0 and %g, got %v", maxWorkSeconds, *seconds)
		}
		*work = time.Duration(math.Round(*seconds * float64(time.Second)))
		return nil
	})
	return work
}

// String defines a flag whose value must be one of choices (the first is the default).
func (c *Command) String(name string, choices []string, usage string) *string {
	text := c.flags.String(name, choices[0], fmt.Sprintf("%s (one of %q)", usage, choices))
	c.checks = append(c.checks, func() error {
		for _, choice := range choices {
			if *text == choice {
				return nil
			}
		}
		return fmt.Errorf("-%s must be one of %q, got %q", name, choices, *text)
	})
	return text
}

// Bool defines a flag that is off unless given (--name or --name=true).
func (c *Command) Bool(name string, usage string) *bool {
	return c.flags.Bool(name, false, usage)
}

// Path defines a flag that names a file; it must be given.
func (c *Command) Path(name string, usage string) *string {
	path := c.flags.String(name, "", usage+" (required)")
	c.checks = append(c.checks, func() error {
		if *path == "" {
			return fmt.Errorf("-%s is required", name)
		}
		return nil
	})
	return path
}

// Parse reads os.Args. --help prints the usage and exits 0; a bad flag or value prints one line
// to stderr and exits 2, as the Python demos do.
func (c *Command) Parse() {
	err := c.flags.Parse(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		c.usage()
		os.Exit(0)
	}
	if err == nil && c.flags.NArg() > 0 {
		err = fmt.Errorf("unexpected argument %q", c.flags.Arg(0))
	}
	for _, check := range c.checks {
		if err != nil {
			break
		}
		err = check()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: error: %v (see --help)\n", c.flags.Name(), err)
		os.Exit(2)
	}
}
