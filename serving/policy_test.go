package serving

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"math/bits"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
)

func hashToken(tok string) string {
	sum := sha256.Sum256([]byte(tok))
	return hex.EncodeToString(sum[:])
}

func TestParsePolicy(t *testing.T) {
	pol, err := parsePolicy("policy.yaml", []byte(`
principals:
  - name: scorer
    token_sha256: [`+hashToken("tok-scorer")+`, "`+strings.ToUpper(hashToken("tok-scorer-2"))+`"]
    grants:
      - {project: payments, views: [card_txn, card_more]}
      - {project: payments, views: [pair_txn]}
      - {project: risk, views: ["*"]}
  - name: spiffe
    certificates:
      - uri: spiffe://example.org/ns/prod/sa/scorer
      - dns: Scorer.Prod.Svc
      - cn: scorer
    grants:
      - {project: "*", views: [card_txn]}
  - name: nothing
    token_sha256: [`+hashToken("tok-nothing")+`]
`))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pol.principals {
		names = append(names, p.name)
	}
	if !slices.Equal(names, []string{"scorer", "spiffe", "nothing"}) {
		t.Fatalf("principals %q", names)
	}
	byName := func(p *principal) string {
		if p == nil {
			return ""
		}
		return p.name
	}
	for tok, want := range map[string]string{"tok-scorer": "scorer", "tok-scorer-2": "scorer", "tok-nothing": "nothing", "tok-other": "", "": ""} {
		if got := byName(pol.byToken(tok)); got != want {
			t.Errorf("token %q: principal %q, want %q", tok, got, want)
		}
	}

	uri := func(s string) *url.URL { u, _ := url.Parse(s); return u }
	for _, c := range []struct {
		name string
		cert *x509.Certificate
		want string
		n    int
	}{
		{"uri", &x509.Certificate{URIs: []*url.URL{uri("spiffe://example.org/ns/prod/sa/scorer")}}, "spiffe", 1},
		{"dns, any case", &x509.Certificate{DNSNames: []string{"scorer.PROD.svc"}}, "spiffe", 1},
		{"cn", &x509.Certificate{Subject: pkix.Name{CommonName: "scorer"}}, "spiffe", 1},
		{"all three", &x509.Certificate{Subject: pkix.Name{CommonName: "scorer"}, DNSNames: []string{"scorer.prod.svc"}, URIs: []*url.URL{uri("spiffe://example.org/ns/prod/sa/scorer")}}, "spiffe", 1},
		{"cn of another case", &x509.Certificate{Subject: pkix.Name{CommonName: "Scorer"}}, "", 0},
		{"other uri", &x509.Certificate{URIs: []*url.URL{uri("spiffe://example.org/ns/dev/sa/scorer")}}, "", 0},
		{"none", &x509.Certificate{}, "", 0},
	} {
		p, n := pol.byCertificate(c.cert)
		if byName(p) != c.want || n != c.n {
			t.Errorf("%s: principal %q of %d, want %q of %d", c.name, byName(p), n, c.want, c.n)
		}
	}

	scorer, spiffe, nothing := pol.principals[0], pol.principals[1], pol.principals[2]
	for _, c := range []struct {
		p             *principal
		project, view string
		want          bool
	}{
		{scorer, "payments", "card_txn", true},
		{scorer, "payments", "card_more", true},
		{scorer, "payments", "pair_txn", true}, // two grants of one project add up
		{scorer, "payments", "other", false},
		{scorer, "risk", "anything", true},
		{scorer, "elsewhere", "card_txn", false},
		{spiffe, "payments", "card_txn", true},
		{spiffe, "elsewhere", "card_txn", true},
		{spiffe, "payments", "card_more", false},
		{nothing, "payments", "card_txn", false},
	} {
		if got := c.p.allowed(c.project, c.view); got != c.want {
			t.Errorf("%s may read %s/%s: %v, want %v", c.p.name, c.project, c.view, got, c.want)
		}
	}
}

// TestParsePolicyErrors checks each kind of mistake gets its message and
// position, and that all are reported at once.
func TestParsePolicyErrors(t *testing.T) {
	h := hashToken("t")
	for _, c := range []struct {
		name, yaml string
		want       []string
	}{
		{"empty", ``, []string{"p.yaml: empty file: list the principals (an empty list denies every call)"}},
		{"comments only", "# nothing\n", []string{"p.yaml: empty file: list the principals (an empty list denies every call)"}},
		{"syntax", "principals: [\n", []string{"p.yaml: yaml: line 1: did not find expected node content"}},
		{"not a mapping", "- a\n", []string{"p.yaml:1:1: the policy: want a mapping, got a list"}},
		{"unknown top field", "principals: []\nusers: []\n", []string{`p.yaml:2:1: the policy: unknown field "users" (known: principals)`}},
		{"no principals", "{}\n", []string{`p.yaml:1:1: the policy: missing field "principals"`}},
		{"null principals", "principals:\n", []string{"p.yaml:1:12: principals: want a list, got null"}},
		{"two documents", "principals: []\n---\nprincipals: []\n", []string{"p.yaml:2:1: a policy file holds one YAML document"}},
		{"alias", "principals: &a []\nx: *a\n", []string{"p.yaml:1:13: anchors and aliases are not allowed in a policy file"}},
		{"principal fields", `
principals:
  - name: a
    tokens: [x]
    token_sha256: [` + h + `]
    name: b
`, []string{
			`p.yaml:4:5: principal: unknown field "tokens" (known: certificates, grants, name, token_sha256)`,
			`p.yaml:6:5: principal: field "name" given twice`,
		}},
		{"no name", "principals:\n  - token_sha256: [" + h + "]\n", []string{`p.yaml:2:5: principal: missing field "name"`}},
		{"name not a string", "principals:\n  - name: [a]\n    token_sha256: [" + h + "]\n", []string{`p.yaml:2:11: principal name: want a string, got a list`}},
		{"empty name", "principals:\n  - name: ''\n    token_sha256: [" + h + "]\n", []string{`p.yaml:2:11: principal name: empty`}},
		{"no credentials", "principals:\n  - name: a\n    grants: []\n", []string{`p.yaml:2:5: principal "a": no token_sha256 and no certificates: it could never authenticate`}},
		{"empty credentials", "principals:\n  - name: a\n    token_sha256: []\n", []string{`p.yaml:2:5: principal "a": no token_sha256 and no certificates: it could never authenticate`}},
		{"plain token", "principals:\n  - name: a\n    token_sha256: [s3cr3t-token-value]\n", []string{`p.yaml:3:20: principal "a": token_sha256 "s3cr…" is not a SHA-256 in hex (64 hex digits): store the hash of the token ('featurestore token hash'), never the token`}},
		{"short hash", "principals:\n  - name: a\n    token_sha256: [abcd]\n", []string{`p.yaml:3:20: principal "a": token_sha256 "abcd" is not a SHA-256 in hex (64 hex digits): store the hash of the token ('featurestore token hash'), never the token`}},
		{"hash as number", "principals:\n  - name: a\n    token_sha256: [12]\n", []string{`p.yaml:3:20: principal "a": token_sha256: want a string, got int "12"`}},
		{"duplicate principal", "principals:\n  - {name: a, token_sha256: [" + h + "]}\n  - {name: a, certificates: [cn: a]}\n", []string{`p.yaml:3:5: principal "a" is listed twice (also at line 2)`}},
		{"token of two principals", "principals:\n  - {name: a, token_sha256: [" + h + "]}\n  - {name: b, token_sha256: [" + strings.ToUpper(h) + "]}\n", []string{`p.yaml:3:30: principal "b": token hash ` + strings.ToUpper(h)[:8] + `… is also listed for principal "a"`}},
		{"certificate of two principals", "principals:\n  - {name: a, certificates: [dns: X.example]}\n  - {name: b, certificates: [dns: x.example]}\n", []string{`p.yaml:3:30: principal "b": certificate name dns:x.example is also listed for principal "a"`}},
		{"certificate entries", `
principals:
  - name: a
    certificates:
      - {uri: spiffe://x, dns: x}
      - {}
      - {email: a@x}
      - {uri: "not absolute"}
      - x
`, []string{
			`p.yaml:5:9: principal "a": a certificate entry gives exactly one of uri, dns or cn`,
			`p.yaml:6:9: principal "a": a certificate entry gives exactly one of uri, dns or cn`,
			`p.yaml:7:10: principal "a": certificate: unknown field "email" (known: cn, dns, uri)`,
			`p.yaml:7:9: principal "a": a certificate entry gives exactly one of uri, dns or cn`,
			`p.yaml:8:15: principal "a": certificate uri "not absolute" is not an absolute URI`,
			`p.yaml:9:9: principal "a": certificate: want a mapping, got str "x"`,
		}},
		{"grants", `
principals:
  - name: a
    token_sha256: [` + h + `]
    grants:
      - {project: p}
      - {views: [v]}
      - {project: p, views: []}
      - {project: p, views: ["*", v]}
      - {project: p, views: v}
      - {project: p, views: [v], roles: [x]}
`, []string{
			`p.yaml:6:9: principal "a": grant: missing field "views"`,
			`p.yaml:7:9: principal "a": grant: missing field "project"`,
			`p.yaml:8:29: principal "a": grant of project "p" lists no views (use ["*"] for every view)`,
			`p.yaml:9:30: principal "a": "*" grants every view of project "p": list it alone`,
			`p.yaml:10:29: principal "a": grant views: want a list, got str "v"`,
			`p.yaml:11:34: principal "a": grant: unknown field "roles" (known: project, views)`,
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := parsePolicy("p.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, c.want) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(c.want, "\n"))
			}
		})
	}
}

func TestParsePolicyEmptyList(t *testing.T) {
	pol, err := parsePolicy("p.yaml", []byte("principals: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.principals) != 0 || pol.byToken("x") != nil {
		t.Error("an empty policy knows someone")
	}
}

// FuzzParsePolicy feeds arbitrary YAML to the policy loader: it must never
// panic, and what it accepts must be consistent: every token hash and
// certificate name belongs to a principal of the policy.
func FuzzParsePolicy(f *testing.F) {
	h := hashToken("t")
	f.Add([]byte("principals: []\n"))
	f.Add([]byte("principals:\n  - name: a\n    token_sha256: [" + h + "]\n    grants: [{project: p, views: [v]}]\n"))
	f.Add([]byte("principals:\n  - name: a\n    certificates: [{uri: 'spiffe://x/y'}, {dns: x}, {cn: y}]\n    grants: [{project: '*', views: ['*']}]\n"))
	f.Add([]byte("principals: &a [*a]\n"))
	f.Add([]byte("principals:\n  - {name: a, token_sha256: [" + h + "]}\n  - {name: a, token_sha256: [" + h + "]}\n"))
	f.Add([]byte("a: [[[[[[[[[[]]]]]]]]]]\n---\n- x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		pol, err := parsePolicy("f.yaml", data)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		in := map[*principal]bool{}
		for _, p := range pol.principals {
			if p.name == "" || in[p] {
				t.Fatalf("principal %q empty or listed twice", p.name)
			}
			in[p] = true
		}
		for _, th := range pol.tokens {
			if !in[th.p] {
				t.Fatalf("token of principal %q outside the policy", th.p.name)
			}
		}
		for name, p := range pol.certs {
			if !in[p] {
				t.Fatalf("certificate %s of principal %q outside the policy", name, p.name)
			}
		}
	})
}

// TestOperationsExamplePolicy keeps the example policy of the operations
// guide loadable.
func TestOperationsExamplePolicy(t *testing.T) {
	doc, err := os.ReadFile("../docs/operations.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\nprincipals:")
	block, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("no example policy in docs/operations.md")
	}
	pol, err := parsePolicy("operations.md", []byte("principals:"+block))
	if err != nil {
		t.Fatal(err)
	}
	if len(pol.principals) != 3 || len(pol.tokens) != 3 || len(pol.certs) != 2 {
		t.Errorf("%d principals, %d tokens, %d certificate names", len(pol.principals), len(pol.tokens), len(pol.certs))
	}
}

// TestTokenHashDiffersInOneWord: a token whose SHA-256 differs from a
// listed one in one bit of its first 64-bit word does not authenticate.
// byToken once computed sum[0]^h[0] | sum[1]^h[1] | ..., which Go reads left
// to right (^ and | share a precedence), so the bits of the presented
// hash's later words could mask a difference in an earlier one.
func TestTokenHashDiffersInOneWord(t *testing.T) {
	const token = "tok-near"
	sum := sha256.Sum256([]byte(token))
	w := hashWords(sum)
	// A bit set in word 1 of the presented hash: flip it in word 0 of the
	// listed hash.
	bit := bits.TrailingZeros64(w[1])
	listed := sum
	listed[bit/8] ^= 1 << (bit % 8) // word 0 is bytes 0..7, little endian
	if listed == sum {
		t.Fatal("test setup: hashes equal")
	}
	pol, err := parsePolicy("policy.yaml", []byte(`
principals:
  - name: someone-else
    token_sha256: [`+hex.EncodeToString(listed[:])+`]
    grants:
      - {project: payments, views: ["*"]}
`))
	if err != nil {
		t.Fatal(err)
	}
	if p := pol.byToken(token); p != nil {
		t.Errorf("token whose SHA-256 %x is not in the policy authenticated as %q (policy lists %x)", sum, p.name, listed)
	}
}
