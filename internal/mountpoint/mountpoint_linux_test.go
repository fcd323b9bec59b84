package mountpoint

import "testing"

func TestOf(t *testing.T) {
	for path, want := range map[string]string{"/": "/", "/proc": "/proc", "/proc/self": "/proc", "/procx": "/"} {
		got, err := Of(path)
		if err != nil || got != want {
			t.Errorf("Of(%s) = %q, %v; want %q", path, got, err, want)
		}
	}
}
