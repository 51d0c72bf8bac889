package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// clientFloor is the go directive of client/go.mod: the oldest Go a service
// importing the client may be on (docs/client.md, "Versions").
const clientFloor = "1.23.0"

// TestClientModuleFloor builds a service outside the repository, on
// go 1.23.0, that requires the client through a replace to this clone, as a
// company's service would before the client is tagged: its go.mod must
// not be raised by go mod tidy or go build, the client must build and vet
// under it (vet's stdversion check reports standard library API newer
// than the floor), and the build must not pull the daemon's module.
func TestClientModuleFloor(t *testing.T) {
	clientDir, err := filepath.Abs("client")
	if err != nil {
		t.Fatal(err)
	}
	sum, err := os.ReadFile(filepath.Join(clientDir, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	goMod := "module example.com/service\n\ngo " + clientFloor + "\n\n" +
		"require github.com/glockd/glockd/client v0.3.0\n\n" +
		"replace github.com/glockd/glockd/client => " + clientDir + "\n"
	mainGo := `package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"

	"github.com/glockd/glockd/client"
)

func main() {
	ctx := context.Background()
	s, err := client.NewSession(ctx, "tls", []string{"127.0.0.1:1"}, client.SessionOptions{
		TLSConfig: &tls.Config{ServerName: "glockd"},
		Token:     "t",
	})
	if errors.Is(err, client.ErrPermissionDenied) || s != nil {
		fmt.Println("unexpected")
	}
}
`
	for name, body := range map[string]string{"go.mod": goMod, "go.sum": string(sum), "main.go": mainGo} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	goCmd := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		// The local toolchain only: a go directive above it must fail, not
		// fetch a newer Go.
		cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=-mod=mod", "GOWORK=off")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	goCmd("mod", "tidy")
	goCmd("build", "-o", filepath.Join(dir, "service"), ".")
	goCmd("vet", "github.com/glockd/glockd/client")
	got, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(got), "\ngo "+clientFloor+"\n") || strings.Contains(string(got), "toolchain") {
		t.Errorf("the service's go.mod was changed from go %s:\n%s", clientFloor, got)
	}
	for _, m := range strings.Fields(goCmd("list", "-m", "all")) {
		if m == "github.com/glockd/glockd" {
			t.Errorf("the client pulls the daemon's module:\n%s", goCmd("list", "-m", "all"))
		}
	}
}
