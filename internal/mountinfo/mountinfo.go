// Package mountinfo holds what more than one kmsfs package needs to read
// the kernel's mount tables (/proc/self/mountinfo, /proc/mounts): today the
// unescaping of their path fields. It imports only the standard library.
package mountinfo

import (
	"strconv"
	"strings"
)

// Unescape undoes the kernel's octal escapes in a mount table field: the
// kernel writes a space as \040, a tab as \011, a newline as \012 and a
// backslash as \134 (see proc(5)), so that fields stay space-separated.
// A backslash not followed by three octal digits is kept as it is.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
