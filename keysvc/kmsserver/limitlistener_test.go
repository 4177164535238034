package kmsserver

import (
	"bufio"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestServerCapsConnections checks MaxConnections: with two connections
// held open, a third is not served until one of them closes (issue 10,
// item 10).
func TestServerCapsConnections(t *testing.T) {
	store := openStore(t, privateDir(t), newTestClock())
	addr, _ := serve(t, store, Options{MaxConnections: 2})
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	c, err := net.Dial("tcp", addr) // the kernel's backlog accepts it
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("POST / HTTP/1.1\r\nHost: kms\r\nContent-Length: 2\r\n\r\n{}")); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := r.ReadByte(); err == nil {
		t.Fatal("a third connection was served while two were held, with MaxConnections 2")
	}
	held[0].Close()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		t.Fatalf("once a held connection closed: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("unsigned request: status %d, want 400", resp.StatusCode)
	}
}
