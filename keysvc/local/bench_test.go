package local

import (
	"context"
	"testing"

	"github.com/kmsfs/kmsfs/keysvc"
)

func benchStore(b *testing.B) (*Store, KeyMetadata, keysvc.EncryptionContext) {
	s := openStore(b, privateDir(b), newTestClock())
	k := mustCreateKey(b, s, CreateKeyInput{RotationPeriodDays: 365})
	ec := keysvc.EncryptionContext{
		keysvc.ContextFilesystemID: "0123456789abcdef0123456789abcdef",
		keysvc.ContextFileID:       "fedcba9876543210fedcba9876543210",
	}
	return s, k, ec
}

func BenchmarkStoreGenerateDataKey(b *testing.B) {
	s, k, ec := benchStore(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		dk, err := s.GenerateDataKey(ctx, k.ARN, ec)
		if err != nil {
			b.Fatal(err)
		}
		keysvc.Zero(dk.Plaintext)
	}
}

func BenchmarkStoreDecrypt(b *testing.B) {
	s, k, ec := benchStore(b)
	ctx := context.Background()
	dk, err := s.GenerateDataKey(ctx, k.ARN, ec)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		u, err := s.Decrypt(ctx, dk.Wrapped.Blob, k.ARN, ec)
		if err != nil {
			b.Fatal(err)
		}
		keysvc.Zero(u.Plaintext)
	}
}

func BenchmarkStoreDecryptParallel(b *testing.B) {
	s, k, ec := benchStore(b)
	ctx := context.Background()
	dk, err := s.GenerateDataKey(ctx, k.ARN, ec)
	if err != nil {
		b.Fatal(err)
	}
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			u, err := s.Decrypt(ctx, dk.Wrapped.Blob, "", ec)
			if err != nil {
				b.Error(err)
				return
			}
			keysvc.Zero(u.Plaintext)
		}
	})
}
