package names_test

import (
	"fmt"
	"strings"

	"github.com/kmsfs/kmsfs/names"
)

// The path of a lookup and a create in a v2 directory: read the
// directory's ID file once, encrypt the plaintext name, and use
// BackingName (plus a sidecar for long names) on the backing directory.
func Example() {
	namesKey := make([]byte, names.KeySize) // from the KMS in a real tree
	for i := range namesKey {
		namesKey[i] = byte(i)
	}
	k, err := names.New(namesKey)
	if err != nil {
		panic(err)
	}
	clear(namesKey)

	var dir names.DirID // from names.NewDirID() at mkdir, then k.ParseDirID of kmsfs.dirid
	for i := range dir {
		dir[i] = 0xa0 + byte(i)
	}
	idFile := k.MarshalDirID(dir)
	dir, err = k.ParseDirID(idFile)
	if err != nil {
		panic(err)
	}

	enc, _ := k.EncryptName(dir, "hello.txt")
	fmt.Println(names.BackingName(enc))

	long := strings.Repeat("x", 200) // names of 160 bytes or more are long
	enc, _ = k.EncryptName(dir, long)
	hashed := names.BackingName(enc)
	sidecar := names.MarshalSidecar(enc) // written as names.SidecarName(hashed) first
	fmt.Println(names.IsLong(enc), len(hashed), names.SidecarName(hashed)[54:])

	// Listing: a hashed entry's name comes from its sidecar.
	back, _ := names.ParseSidecar(hashed, sidecar)
	plain, _ := k.DecryptName(dir, back)
	fmt.Println(plain == long)
	// Output:
	// IbaLUVpfAlSPybjWBaojYgYOU7C2S7s4F4AvgxYWzpQ
	// true 54 .name
	// true
}
