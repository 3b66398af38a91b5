package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeTLS serves HTTPS (HTTP/2 and HTTP/1.1) with a self-signed
// certificate, and --no-auth.
func TestServeTLS(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile, pool := selfSigned(t, dir)
	policy := filepath.Join(dir, "policy.stof")
	if err := os.WriteFile(policy, []byte(devPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	p := startWith(t, client, "https://"+listen, nil, "serve", "--node-id", "tls1", "--data-dir", filepath.Join(dir, "data"),
		"--listen", listen, "--raft-addr", freeAddr(t), "--bootstrap", "--shards", "1", "--policy", policy,
		"--tls-cert", certFile, "--tls-key", keyFile, "--no-auth")
	if !strings.Contains(p.stderr.String(), "WITHOUT authentication") {
		t.Errorf("no warning about --no-auth")
	}
	req, _ := http.NewRequest("POST", p.url+"/capstan.v1.PolicyService/GetPolicy", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	res, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(res.Body)
	res.Body.Close()
	var out struct{ Version, Format string }
	if res.StatusCode != 200 || res.ProtoMajor != 2 || json.Unmarshal(body, &out) != nil || out.Version != "1" || out.Format != "stof" {
		t.Fatalf("GetPolicy over TLS without a key: %s %s %s", res.Proto, res.Status, body)
	}
	// Plain HTTP on the TLS port is refused.
	if st, err := healthJSON("http://" + listen); err == nil && serving(st) {
		t.Fatal("plain HTTP answered on the TLS listener")
	}
	p.stop()
}

// selfSigned writes a certificate for 127.0.0.1 and its key, and returns a
// pool trusting it.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "capstan-test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool
}
