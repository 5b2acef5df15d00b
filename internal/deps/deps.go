//go:build tools

// Package deps pins the modules the design rests on until every package imports its own.
package deps

import (
	_ "github.com/ebfe/scard"
	_ "github.com/go-piv/piv-go/v2/piv"
	_ "github.com/hashicorp/vault/shamir"
	_ "github.com/rogpeppe/go-internal/testscript"
	_ "github.com/urfave/cli/v2"
	_ "go.etcd.io/bbolt"
	_ "golang.org/x/crypto/hkdf"
	_ "golang.org/x/sys/unix"
	_ "golang.org/x/term"
)
