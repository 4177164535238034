// Reading the kernel's mount table (/proc/self/mounts).

package integration

import (
	"bufio"
	"os"
	"strconv"
	"strings"
)

// mountEntry is one line of /proc/mounts.
type mountEntry struct {
	Source, Mountpoint, FSType, Options string
}

// readMounts parses /proc/self/mounts.
func readMounts() []mountEntry {
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		return nil
	}
	defer f.Close()
	var out []mountEntry
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 4 {
			continue
		}
		out = append(out, mountEntry{
			Source:     unescapeMount(fields[0]),
			Mountpoint: unescapeMount(fields[1]),
			FSType:     fields[2],
			Options:    fields[3],
		})
	}
	return out
}

// unescapeMount undoes the octal escapes (\040 etc.) of /proc/mounts. It
// is the one copy outside internal/mountinfo.Unescape, and must stay one:
// integration imports nothing of the project (see internal/layering).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// findMount returns the last (topmost) mount on mountpoint.
func findMount(mountpoint string) (mountEntry, bool) {
	var found mountEntry
	ok := false
	for _, e := range readMounts() {
		if e.Mountpoint == mountpoint {
			found, ok = e, true
		}
	}
	return found, ok
}

// leftoverMounts lists FUSE mounts under root: every one of them is a kmsfs
// mount made by this run (the mount points live there, and root's name
// mentions kmsfs), so any of them after the run is a leak.
func leftoverMounts(root string) []mountEntry {
	var left []mountEntry
	for _, e := range readMounts() {
		inRoot := strings.HasPrefix(e.Mountpoint, root+"/") || strings.HasPrefix(e.Source, root+"/")
		if strings.HasPrefix(e.FSType, "fuse") && inRoot {
			left = append(left, e)
		}
	}
	return left
}
