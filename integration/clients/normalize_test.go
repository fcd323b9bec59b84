package clients

import "testing"

// TestFoldRedraws: busybox's redraw of its prompt and the input typed so
// far, which depends on when the client resizes, folds away; the typed
// line and other escapes stay.
func TestFoldRedraws(t *testing.T) {
	for in, want := range map[string]string{
		"/ # echo ty/ # echo ty\x1b[Jped; exit 5\ntyped\n": "/ # echo typed; exit 5\ntyped\n",
		"/ # / # \x1b[Jecho typed\n":                       "/ # echo typed\n",
		"x\n/ # ab/ # ab\x1b[J\n/ # cd/ # cd\x1b[Jef\n":    "x\n/ # ab\n/ # cdef\n",
		"/ # echo typed\n":                                 "/ # echo typed\n",
		"/ # abc/ # ab\x1b[J\n":                            "/ # abc/ # ab\x1b[J\n",
		"ab ab\x1b[J":                                      "ab ab\x1b[J",
	} {
		if got := foldRedraws(in); got != want {
			t.Errorf("foldRedraws(%q) = %q, want %q", in, got, want)
		}
	}
	if got := normalize("/ # echo ty/ # echo ty\x1b[Jped; exit 5"); got != "/ # echo typed; exit 5" {
		t.Errorf("normalize: %q", got)
	}
}
