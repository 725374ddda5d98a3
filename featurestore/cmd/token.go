package cmd

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
)

// maxTokenBytes bounds what 'token hash' reads: a token is a header value.
const maxTokenBytes = 4096

func tokenCommand() *command {
	return &command{
		name:    "token",
		usage:   "token new | token hash [FILE]",
		summary: "Make a bearer token, or hash one for the auth policy.",
		long: `Bearer tokens authenticate calls to 'featurestore serve --auth-policy'. The
policy file stores only their SHA-256 hashes (token_sha256), never the tokens.

'token new' prints a new random token (256 bits) and its hash, as YAML.
'token hash' reads a token from FILE, or from standard input when FILE is
absent or "-", and prints its hash. Surrounding white space, such as the
newline echo adds, is not part of the token. The token is read from a file
or standard input rather than the command line so that it stays out of
shell history and process lists.`,
		setup: func(fs *flag.FlagSet) func(context.Context, *runEnv, []string) error {
			return func(_ context.Context, env *runEnv, args []string) error {
				if len(args) == 0 {
					return fmt.Errorf("%w: token takes a subcommand: new or hash", errUsage)
				}
				switch args[0] {
				case "new":
					if len(args) != 1 {
						return fmt.Errorf("%w: token new takes no arguments", errUsage)
					}
					tok := newToken()
					fmt.Fprintf(env.stdout, "token: %s\ntoken_sha256: %s\n", tok, tokenHash(tok))
					return nil
				case "hash":
					if len(args) > 2 {
						return fmt.Errorf("%w: token hash takes at most one argument, FILE", errUsage)
					}
					name, in := "standard input", io.Reader(os.Stdin)
					if len(args) == 2 && args[1] != "-" {
						f, err := os.Open(args[1])
						if err != nil {
							return fmt.Errorf("read token: %w", err)
						}
						defer f.Close()
						name, in = args[1], f
					}
					tok, err := readToken(in)
					if err != nil {
						return fmt.Errorf("read token from %s: %w", name, err)
					}
					fmt.Fprintln(env.stdout, tokenHash(tok))
					return nil
				}
				return fmt.Errorf("%w: unknown token subcommand %q: use new or hash", errUsage, args[0])
			}
		},
	}
}

// newToken returns a random token: 32 bytes, URL-safe base64, with a prefix
// that secret scanners can match.
func newToken() string {
	b := make([]byte, 32)
	rand.Read(b) // never fails: crypto/rand panics rather than return short
	return "fst_" + base64.RawURLEncoding.EncodeToString(b)
}

// tokenHash is the form of a token in the auth policy: its SHA-256, hex.
func tokenHash(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

// readToken reads one token: surrounding white space trimmed; inner white
// space and control characters refused, since no client could send them in
// an authorization header.
func readToken(r io.Reader) (string, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenBytes+1))
	if err != nil {
		return "", err
	}
	if len(b) > maxTokenBytes {
		return "", fmt.Errorf("longer than %d bytes", maxTokenBytes)
	}
	tok := strings.TrimSpace(string(b))
	switch {
	case tok == "":
		return "", errors.New("no token")
	case strings.IndexFunc(tok, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
		return "", errors.New("the token contains white space or control characters")
	}
	return tok, nil
}
