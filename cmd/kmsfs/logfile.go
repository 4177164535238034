package main

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// openLogFile opens path for appending, creating it with mode 0600. It
// refuses a symbolic link (O_NOFOLLOW: whoever can write the directory
// must not redirect a root daemon's log or audit lines into another file)
// and anything but a regular file. It is how --log-file and --audit-log
// are opened.
func openLogFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s is a symbolic link; give the path of the file itself: %w", path, err)
	}
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, fmt.Errorf("%s is not a regular file (%s)", path, fi.Mode().Type())
	}
	return f, nil
}
