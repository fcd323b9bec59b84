package options

import (
	"testing"
)

// FuzzFromTOML: any body is refused or gives options that validate.
func FuzzFromTOML(f *testing.F) {
	for _, s := range []string{"Bridge = \"tp0\"", "SystemdCgroup = true\nSubnet = \"10.1.0.0/16\"", "x = [1, {a = 2}]", "[table]\nk = 1", "Subnet6 = \"::/0\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := FromTOML(body)
		if err != nil {
			return
		}
		if err := Validate(o); err != nil {
			t.Fatalf("accepted options that do not validate: %v", err)
		}
	})
}
