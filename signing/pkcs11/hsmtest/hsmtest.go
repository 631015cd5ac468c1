// Package hsmtest gives a test its own SoftHSM2 token: a private
// SOFTHSM2_CONF and token directory in t.TempDir(), a token initialised
// with softhsm2-util, and the pkcs11.Config that opens it. Nothing is
// emulated: the tests sign with SoftHSM2 through the PKCS#11 library that
// a real HSM's module replaces.
//
// SoftHSM2 reads SOFTHSM2_CONF when the library is initialised, once for
// every backend open at the same time in the process. New therefore sets
// it with t.Setenv: a test that calls New cannot be parallel (its
// subtests can), and must close its backends before it ends, which
// pkcs11.New's callers do with t.Cleanup.
//
// When SoftHSM2 is not installed, New fails the test, saying to run
// `make softhsm`: CI installs it, so a skip would hide a test that
// never ran.
package hsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/auth-platform/tokenservice/signing/pkcs11"
)

// The token's label and PINs.
const (
	Label = "tokend-test"
	PIN   = "1234"
	SOPIN = "5678"
)

// Token is an initialised SoftHSM2 token private to one test.
type Token struct {
	// Config opens the token (module, label, user PIN).
	Config pkcs11.Config
	// Dir is the token directory: SoftHSM2 keeps each object there in
	// its own file.
	Dir string
}

// New initialises a token in t.TempDir() and points SOFTHSM2_CONF at it
// until t ends.
func New(t testing.TB) *Token {
	t.Helper()
	module := Module(t)
	util, err := exec.LookPath("softhsm2-util")
	if err != nil {
		t.Fatalf("softhsm2-util not found (%v): SoftHSM2 is not installed; run `make softhsm`", err)
	}
	dir := t.TempDir()
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	cfg := "directories.tokendir = " + tokens + "\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n"
	if err := os.WriteFile(conf, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SOFTHSM2_CONF", conf)
	cmd := exec.Command(util, "--init-token", "--free", "--label", Label, "--pin", PIN, "--so-pin", SOPIN)
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util --init-token: %v\n%s", err, out)
	}
	return &Token{Config: pkcs11.Config{Module: module, TokenLabel: Label, PIN: PIN}, Dir: tokens}
}

// Module returns the path of the SoftHSM2 PKCS#11 library:
// $SOFTHSM2_MODULE if set (a machine without Debian's layout), else
// /usr/lib/softhsm/libsofthsm2.so, else where dpkg installed it.
func Module(t testing.TB) string {
	t.Helper()
	if m := os.Getenv("SOFTHSM2_MODULE"); m != "" {
		if _, err := os.Stat(m); err != nil {
			t.Fatalf("SOFTHSM2_MODULE: %v", err)
		}
		return m
	}
	const debian = "/usr/lib/softhsm/libsofthsm2.so"
	if _, err := os.Stat(debian); err == nil {
		return debian
	}
	for _, pkg := range []string{"libsofthsm2", "softhsm2"} {
		out, err := exec.Command("dpkg", "-L", pkg).Output()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(out), "\n") {
			if filepath.Base(line) == "libsofthsm2.so" {
				if _, err := os.Stat(line); err == nil {
					return line
				}
			}
		}
	}
	t.Fatalf("the SoftHSM2 PKCS#11 module (libsofthsm2.so) is not installed: run `make softhsm` (or set SOFTHSM2_MODULE)")
	return ""
}

// Objects returns how many objects the token holds, counted from its
// files, independently of the code under test.
func (tok *Token) Objects(t testing.TB) int {
	t.Helper()
	var n int
	err := filepath.WalkDir(tok.Dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".object") && d.Name() != "token.object" {
			n++
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}
