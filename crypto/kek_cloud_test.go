package crypto

// Cloud KEKs against in-process fakes of AWS KMS and Google Cloud KMS: the
// real services cannot be reached from the test machines. The fakes check
// what Tink's clients send (key name, associated data) and answer as the
// services do, so these tests cover Stele's side of the integration: URI
// parsing, the probe, the per-call timeouts and wrapping keysets. What they
// cannot cover (credentials, IAM, the services' own behaviour) is listed in
// docs/crypto.md.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	kmspb "cloud.google.com/go/kms/apiv1/kmspb"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/tink-crypto/tink-go-awskms/v3/integration/awskms"
	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// fakeCipher is the fakes' key: a Tink AEAD standing in for the HSM.
func fakeCipher(t *testing.T) tink.AEAD {
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	a, err := aead.New(h)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// fakeAWSKMS implements awskms.KMSAPI for one key.
type fakeAWSKMS struct {
	keyARN string
	cipher tink.AEAD
	calls  atomic.Int32
	fail   error
}

// context binds the key and the encryption context, as AWS KMS does.
func (f *fakeAWSKMS) context(keyID *string, ec map[string]string) ([]byte, error) {
	if keyID == nil || *keyID != f.keyARN {
		return nil, fmt.Errorf("NotFoundException: key %v", keyID)
	}
	var b strings.Builder
	b.WriteString(*keyID)
	for _, k := range slices.Sorted(maps.Keys(ec)) {
		fmt.Fprintf(&b, "\x00%s=%s", k, ec[k])
	}
	return []byte(b.String()), nil
}

func (f *fakeAWSKMS) Encrypt(ctx context.Context, in *kms.EncryptInput, _ ...func(*kms.Options)) (*kms.EncryptOutput, error) {
	f.calls.Add(1)
	if f.fail != nil {
		return nil, f.fail
	}
	ad, err := f.context(in.KeyId, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	c, err := f.cipher.Encrypt(in.Plaintext, ad)
	return &kms.EncryptOutput{CiphertextBlob: c, KeyId: in.KeyId}, err
}

func (f *fakeAWSKMS) Decrypt(ctx context.Context, in *kms.DecryptInput, _ ...func(*kms.Options)) (*kms.DecryptOutput, error) {
	f.calls.Add(1)
	if f.fail != nil {
		return nil, f.fail
	}
	ad, err := f.context(in.KeyId, in.EncryptionContext)
	if err != nil {
		return nil, err
	}
	p, err := f.cipher.Decrypt(in.CiphertextBlob, ad)
	if err != nil {
		return nil, errors.New("InvalidCiphertextException")
	}
	return &kms.DecryptOutput{Plaintext: p, KeyId: in.KeyId}, nil
}

var _ awskms.KMSAPI = (*fakeAWSKMS)(nil)

// fakeGCPKMS is a Cloud KMS gRPC server for one key.
type fakeGCPKMS struct {
	kmspb.UnimplementedKeyManagementServiceServer
	keyName string
	cipher  tink.AEAD
}

func crc32c(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))))
}

func (f *fakeGCPKMS) Encrypt(_ context.Context, r *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	if r.Name != f.keyName {
		return nil, status.Errorf(codes.NotFound, "key %s", r.Name)
	}
	if r.PlaintextCrc32C.GetValue() != crc32c(r.Plaintext).GetValue() {
		return nil, status.Error(codes.InvalidArgument, "plaintext checksum")
	}
	c, err := f.cipher.Encrypt(r.Plaintext, r.AdditionalAuthenticatedData)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &kmspb.EncryptResponse{Name: r.Name + "/cryptoKeyVersions/1", Ciphertext: c, CiphertextCrc32C: crc32c(c),
		VerifiedPlaintextCrc32C: true, VerifiedAdditionalAuthenticatedDataCrc32C: true}, nil
}

func (f *fakeGCPKMS) Decrypt(_ context.Context, r *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	if r.Name != f.keyName {
		return nil, status.Errorf(codes.NotFound, "key %s", r.Name)
	}
	p, err := f.cipher.Decrypt(r.Ciphertext, r.AdditionalAuthenticatedData)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, "Decryption failed")
	}
	return &kmspb.DecryptResponse{Plaintext: p, PlaintextCrc32C: crc32c(p)}, nil
}

// gcpConn serves f over an in-memory listener and returns a client
// connection to it.
func gcpConn(t *testing.T, f *fakeGCPKMS) *grpc.ClientConn {
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	kmspb.RegisterKeyManagementServiceServer(srv, f)
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient("passthrough:///fake-kms",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// checkCloudKEK wraps and unwraps a keyset with kek and checks the binding
// to the associated data.
func checkCloudKEK(t *testing.T, kek KEK, uri string) {
	t.Helper()
	if kek.URI() != uri {
		t.Fatalf("URI = %q, want %q", kek.URI(), uri)
	}
	ks, err := NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	ad := KeysetAD("acme", "billing", "prod")
	w, err := ks.Wrap(kek, ad)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnwrapKeyset(w, kek, ad)
	if err != nil {
		t.Fatal(err)
	}
	if back.Primary() != ks.Primary() {
		t.Fatal("unwrapped another keyset")
	}
	if _, err := UnwrapKeyset(w, kek, KeysetAD("acme", "billing", "staging")); !errors.Is(err, ErrUnwrap) {
		t.Fatalf("unwrap with another AD = %v, want ErrUnwrap", err)
	}
}

func TestAWSKEKWithFakeKMS(t *testing.T) {
	const arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	const uri = "aws-kms://" + arn
	fake := &fakeAWSKMS{keyARN: arn, cipher: fakeCipher(t)}
	kek, err := openKEK(t.Context(), uri, kmsOptions{aws: []awskms.ClientOption{awskms.WithKMS(fake)}})
	if err != nil {
		t.Fatal(err)
	}
	if n := fake.calls.Load(); n != 2 {
		t.Fatalf("OpenKEK made %d KMS calls, want 2 (the probe)", n)
	}
	checkCloudKEK(t, kek, uri)

	t.Run("wrong key", func(t *testing.T) {
		other := &fakeAWSKMS{keyARN: arn + "-other", cipher: fake.cipher}
		_, err := openKEK(t.Context(), uri, kmsOptions{aws: []awskms.ClientOption{awskms.WithKMS(other)}})
		if !errors.Is(err, ErrKEKUnavailable) || !strings.Contains(err.Error(), "NotFoundException") {
			t.Fatalf("OpenKEK = %v, want ErrKEKUnavailable naming the KMS error", err)
		}
	})
	t.Run("KMS error during unwrap is wrapped", func(t *testing.T) {
		ks, _ := NewKeyset()
		w, err := ks.Wrap(kek, nil)
		if err != nil {
			t.Fatal(err)
		}
		fake.fail = context.DeadlineExceeded
		defer func() { fake.fail = nil }()
		_, err = UnwrapKeyset(w, kek, nil)
		if !errors.Is(err, ErrUnwrap) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("UnwrapKeyset = %v, want ErrUnwrap and the deadline", err)
		}
	})
}

func TestGCPKEKWithFakeKMS(t *testing.T) {
	const name = "projects/p/locations/global/keyRings/r/cryptoKeys/k"
	const uri = "gcp-kms://" + name
	fake := &fakeGCPKMS{keyName: name, cipher: fakeCipher(t)}
	conn := gcpConn(t, fake)
	opts := kmsOptions{gcp: []gcpkms.Option{gcpkms.WithGoogleAPIClientOptions(option.WithGRPCConn(conn))}}
	kek, err := openKEK(t.Context(), uri, opts)
	if err != nil {
		t.Fatal(err)
	}
	checkCloudKEK(t, kek, uri)

	t.Run("wrong key", func(t *testing.T) {
		_, err := openKEK(t.Context(), uri+"-other", opts)
		if !errors.Is(err, ErrKEKUnavailable) || !strings.Contains(err.Error(), "NotFound") {
			t.Fatalf("OpenKEK = %v, want ErrKEKUnavailable naming the KMS error", err)
		}
	})
	t.Run("context ends during the probe", func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		_, err := openKEK(ctx, uri, opts)
		if !errors.Is(err, ErrKEKUnavailable) {
			t.Fatalf("OpenKEK with a cancelled context = %v", err)
		}
	})
	t.Run("another KEK cannot unwrap", func(t *testing.T) {
		ks, _ := NewKeyset()
		w, err := ks.Wrap(kek, nil)
		if err != nil {
			t.Fatal(err)
		}
		otherFake := &fakeGCPKMS{keyName: name, cipher: fakeCipher(t)}
		other, err := openKEK(t.Context(), uri, kmsOptions{gcp: []gcpkms.Option{gcpkms.WithGoogleAPIClientOptions(option.WithGRPCConn(gcpConn(t, otherFake)))}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := UnwrapKeyset(w, other, nil); !errors.Is(err, ErrUnwrap) {
			t.Fatalf("UnwrapKeyset with another key = %v", err)
		}
		if bytes.Equal(w, nil) {
			t.Fatal("empty wrap")
		}
	})
}
