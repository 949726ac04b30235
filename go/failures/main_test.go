package main

import "testing"

func TestPythonSpacingMatchesJsonDumpsOutsideStringsOnly(t *testing.T) {
	// Each want is what Python's json.dumps writes for the same value.
	cases := map[string]string{
		`{"caller":"started"}`:               `{"caller": "started"}`,
		`{"end":3,"outcome":"failed"}`:       `{"end": 3, "outcome": "failed"}`,
		`{"caller_error":null}`:              `{"caller_error": null}`,
		`{"results":[[2,4],[null,8]]}`:       `{"results": [[2, 4], [null, 8]]}`,
		`{"g":["goroutine 7 [chan send]:"]}`: `{"g": ["goroutine 7 [chan send]:"]}`,
		`{"s":"a, b: \"c, d\" \\"}`:          `{"s": "a, b: \"c, d\" \\"}`,
	}
	for compact, want := range cases {
		if got := string(pythonSpacing([]byte(compact))); got != want {
			t.Errorf("pythonSpacing(%s) = %s, want %s", compact, got, want)
		}
	}
}
