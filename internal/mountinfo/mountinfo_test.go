package mountinfo

import "testing"

func TestUnescape(t *testing.T) {
	for in, want := range map[string]string{
		`/a\040b`:      "/a b",
		`/tab\011x`:    "/tab\tx",
		`/nl\012x`:     "/nl\nx",
		`/back\134sl`:  `/back\sl`,
		`/a\040b\134c`: `/a b\c`,
		`/end\040`:     "/end ", // an escape that ends the field
		`/trailing\04`: `/trailing\04`,
		`/not\08octal`: `/not\08octal`,
		`/big\777`:     `/big\777`, // over a byte: not an escape
		`/plain`:       "/plain",
		``:             "",
	} {
		if got := Unescape(in); got != want {
			t.Errorf("Unescape(%q) = %q, want %q", in, got, want)
		}
	}
}
