package keysvc

import (
	"context"
	"testing"
	"time"
)

// TestCacheFetched: Decrypt reports when the KMS gave its answer, so a
// caller can bound how long it trusts a key: a miss is fetched now, a hit
// is as old as its entry.
func TestCacheFetched(t *testing.T) {
	svc := &fakeService{}
	clk := &fakeClock{t: time.Unix(1e9, 0)}
	c := NewCache(svc, CacheOptions{MaxAge: time.Minute, Now: clk.Now})
	defer c.Close()
	ctx := context.Background()
	blob := []byte("blob-fetched")
	u, err := c.Decrypt(ctx, blob, "", testEC)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Fetched.Equal(time.Unix(1e9, 0)) {
		t.Errorf("miss: Fetched %v, want the clock's now", u.Fetched)
	}
	clk.Advance(40 * time.Second)
	u, err = c.Decrypt(ctx, blob, "", testEC)
	if err != nil {
		t.Fatal(err)
	}
	if !u.Fetched.Equal(time.Unix(1e9, 0)) {
		t.Errorf("hit 40s later: Fetched %v, want the entry's time %v", u.Fetched, time.Unix(1e9, 0))
	}
	clk.Advance(30 * time.Second)
	u, err = c.Decrypt(ctx, blob, "", testEC)
	if err != nil {
		t.Fatal(err)
	}
	if want := time.Unix(1e9+70, 0); !u.Fetched.Equal(want) {
		t.Errorf("after expiry: Fetched %v, want %v", u.Fetched, want)
	}
}
