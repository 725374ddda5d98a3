package serving

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The access policy file lists who may call the server and what they may
// read:
//
//	principals:
//	  - name: fraud-scoring
//	    token_sha256:             # SHA-256 of each bearer token, hex
//	      - 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
//	    certificates:             # names of verified client certificates
//	      - uri: spiffe://example.org/ns/prod/sa/fraud-scoring
//	      - dns: fraud-scoring.prod.svc
//	      - cn: fraud-scoring
//	    grants:
//	      - project: payments
//	        views: [card_txn, card_more]   # or ["*"]: every view
//
// A principal has token hashes, certificate names or both. Plain tokens are
// never stored: `featurestore token hash` prints the hash of one. A token or a
// certificate name belongs to one principal only. A grant's project may be
// "*", any project.

// policy is one loaded version of the policy file, ready for lookups.
type policy struct {
	principals []*principal
	// tokens holds every token hash; a lookup compares them all.
	tokens []tokenHash
	// certs maps certificate names ("uri:…", "dns:…", "cn:…") to principals.
	certs map[string]*principal
}

type tokenHash struct {
	sum [sha256.Size / 8]uint64
	p   *principal
}

// hashWords is a SHA-256 sum as machine words, compared without branches.
func hashWords(sum [sha256.Size]byte) (w [sha256.Size / 8]uint64) {
	for i := range w {
		w[i] = binary.LittleEndian.Uint64(sum[8*i:])
	}
	return w
}

// principal is an authenticated caller and what it may read.
type principal struct {
	name   string
	grants map[string]viewGrant // by project; "*" is any project
}

// viewGrant is the feature views granted in one project.
type viewGrant struct {
	all   bool
	views map[string]bool
}

// allowed reports whether p may read the feature view of the project.
func (p *principal) allowed(project, view string) bool {
	for _, key := range [2]string{project, "*"} {
		if g, ok := p.grants[key]; ok && (g.all || g.views[view]) {
			return true
		}
	}
	return false
}

// byToken returns the principal of a bearer token, or nil. It compares the
// token's hash with every hash of the policy, each in full and without
// branches, so how long it takes tells nothing about which hashes exist or
// how close the token came to one.
func (pol *policy) byToken(token string) *principal {
	sum := hashWords(sha256.Sum256([]byte(token)))
	match := -1
	for i := range pol.tokens {
		h := &pol.tokens[i].sum
		diff := (sum[0] ^ h[0]) | (sum[1] ^ h[1]) | (sum[2] ^ h[2]) | (sum[3] ^ h[3]) // ^ and | share a precedence in Go
		eq := subtle.ConstantTimeEq(int32(uint32(diff)|uint32(diff>>32)), 0)
		match = subtle.ConstantTimeSelect(eq, i, match)
	}
	if match < 0 {
		return nil
	}
	return pol.tokens[match].p
}

// byCertificate returns the principal that a verified client certificate
// names through its URI SANs, DNS SANs or subject common name; nil and the
// number of principals found when that is not exactly one.
func (pol *policy) byCertificate(cert *x509.Certificate) (*principal, int) {
	var found *principal
	n := 0
	see := func(name string) {
		if p := pol.certs[name]; p != nil && p != found {
			found = p
			n++
		}
	}
	for _, u := range cert.URIs {
		see("uri:" + u.String())
	}
	for _, d := range cert.DNSNames {
		see("dns:" + strings.ToLower(d))
	}
	if cn := cert.Subject.CommonName; cn != "" {
		see("cn:" + cn)
	}
	if n != 1 {
		return nil, n
	}
	return found, 1
}

// parsePolicy reads a policy file; file names it in errors, each of which
// carries its line and column. All errors are reported at once.
func parsePolicy(file string, data []byte) (*policy, error) {
	d := &policyDecoder{file: file}
	pol := d.decode(data)
	if len(d.errs) > 0 {
		return nil, errors.New(strings.Join(d.errs, "\n"))
	}
	return pol, nil
}

type policyDecoder struct {
	file string
	errs []string
}

func (d *policyDecoder) errorf(n *yaml.Node, format string, args ...any) {
	d.errs = append(d.errs, fmt.Sprintf("%s:%d:%d: %s", d.file, n.Line, n.Column, fmt.Sprintf(format, args...)))
}

func (d *policyDecoder) decode(data []byte) *policy {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			err = errors.New("empty file: list the principals (an empty list denies every call)")
		}
		d.errs = append(d.errs, fmt.Sprintf("%s: %v", d.file, err))
		return nil
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err == nil {
		d.errorf(&extra, "a policy file holds one YAML document")
	} else if err != io.EOF {
		d.errs = append(d.errs, fmt.Sprintf("%s: %v", d.file, err))
	}
	pol := &policy{certs: map[string]*principal{}}
	if len(doc.Content) == 0 {
		d.errs = append(d.errs, d.file+": empty file: list the principals (an empty list denies every call)")
		return nil
	}
	if !d.noAliases(&doc) {
		return nil
	}
	root := doc.Content[0]
	var list *yaml.Node
	d.mapping(root, "the policy", map[string]func(v *yaml.Node){
		"principals": func(v *yaml.Node) { list = v },
	}, "principals")
	if list == nil || !d.sequence(list, "principals") {
		return nil
	}
	names := map[string]*yaml.Node{}
	tokenOwner := map[[sha256.Size / 8]uint64]string{}
	for _, n := range list.Content {
		p := d.principal(n, pol, tokenOwner)
		if p == nil {
			continue
		}
		if prev := names[p.name]; prev != nil {
			d.errorf(n, "principal %q is listed twice (also at line %d)", p.name, prev.Line)
			continue
		}
		names[p.name] = n
		pol.principals = append(pol.principals, p)
	}
	return pol
}

// noAliases rejects anchors and aliases: the policy is small, and refusing
// them rules out alias bombs.
func (d *policyDecoder) noAliases(n *yaml.Node) bool {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		d.errorf(n, "anchors and aliases are not allowed in a policy file")
		return false
	}
	for _, c := range n.Content {
		if !d.noAliases(c) {
			return false
		}
	}
	return true
}

// mapping checks that n is a mapping with only the given keys, each at most
// once and the required ones present, and calls each key's function with
// its value.
func (d *policyDecoder) mapping(n *yaml.Node, what string, fields map[string]func(v *yaml.Node), required ...string) bool {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s: want a mapping, got %s", what, describe(n))
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		f, ok := fields[k.Value]
		switch {
		case k.Kind != yaml.ScalarNode || !ok:
			d.errorf(k, "%s: unknown field %q (known: %s)", what, k.Value, strings.Join(slices.Sorted(maps.Keys(fields)), ", "))
		case seen[k.Value]:
			d.errorf(k, "%s: field %q given twice", what, k.Value)
		default:
			seen[k.Value] = true
			f(v)
		}
	}
	ok := true
	for _, r := range required {
		if !seen[r] {
			d.errorf(n, "%s: missing field %q", what, r)
			ok = false
		}
	}
	return ok
}

func (d *policyDecoder) sequence(n *yaml.Node, what string) bool {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s: want a list, got %s", what, describe(n))
		return false
	}
	return true
}

// str returns the non-empty string n holds.
func (d *policyDecoder) str(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		d.errorf(n, "%s: want a string, got %s", what, describe(n))
		return "", false
	}
	if strings.TrimSpace(n.Value) == "" {
		d.errorf(n, "%s: empty", what)
		return "", false
	}
	return n.Value, true
}

func (d *policyDecoder) principal(n *yaml.Node, pol *policy, tokenOwner map[[sha256.Size / 8]uint64]string) *principal {
	p := &principal{grants: map[string]viewGrant{}}
	var tokens, certs, grants *yaml.Node
	nameOK := false
	ok := d.mapping(n, "principal", map[string]func(v *yaml.Node){
		"name":         func(v *yaml.Node) { p.name, nameOK = d.str(v, "principal name") },
		"token_sha256": func(v *yaml.Node) { tokens = v },
		"certificates": func(v *yaml.Node) { certs = v },
		"grants":       func(v *yaml.Node) { grants = v },
	}, "name")
	if !ok || !nameOK {
		return nil
	}
	what := fmt.Sprintf("principal %q", p.name)
	errsBefore, credentials := len(d.errs), 0
	if tokens != nil && d.sequence(tokens, what+": token_sha256") {
		for _, t := range tokens.Content {
			s, ok := d.str(t, what+": token_sha256")
			if !ok {
				continue
			}
			b, err := hex.DecodeString(s)
			if err != nil || len(b) != sha256.Size {
				d.errorf(t, "%s: token_sha256 %q is not a SHA-256 in hex (64 hex digits): store the hash of the token ('featurestore token hash'), never the token", what, redact(s))
				continue
			}
			th := tokenHash{sum: hashWords([sha256.Size]byte(b)), p: p}
			if owner, dup := tokenOwner[th.sum]; dup {
				d.errorf(t, "%s: token hash %s… is also listed for principal %q", what, s[:8], owner)
				continue
			}
			tokenOwner[th.sum] = p.name
			pol.tokens = append(pol.tokens, th)
			credentials++
		}
	}
	if certs != nil && d.sequence(certs, what+": certificates") {
		for _, c := range certs.Content {
			name, ok := d.certName(c, what)
			if !ok {
				continue
			}
			if owner := pol.certs[name]; owner != nil {
				d.errorf(c, "%s: certificate name %s is also listed for principal %q", what, name, owner.name)
				continue
			}
			pol.certs[name] = p
			credentials++
		}
	}
	if credentials == 0 && len(d.errs) == errsBefore {
		d.errorf(n, "%s: no token_sha256 and no certificates: it could never authenticate", what)
	}
	if grants != nil && d.sequence(grants, what+": grants") {
		for _, g := range grants.Content {
			d.grant(g, what, p)
		}
	}
	return p
}

// certName reads one certificates entry: exactly one of uri, dns or cn.
func (d *policyDecoder) certName(n *yaml.Node, what string) (string, bool) {
	var name string
	set := 0
	field := func(kind string) func(v *yaml.Node) {
		return func(v *yaml.Node) {
			set++
			s, ok := d.str(v, what+": certificate "+kind)
			if !ok {
				return
			}
			switch kind {
			case "uri":
				u, err := url.Parse(s)
				if err != nil || u.Scheme == "" {
					d.errorf(v, "%s: certificate uri %q is not an absolute URI", what, s)
					return
				}
				s = u.String()
			case "dns":
				s = strings.ToLower(s)
			}
			name = kind + ":" + s
		}
	}
	if !d.mapping(n, what+": certificate", map[string]func(v *yaml.Node){"uri": field("uri"), "dns": field("dns"), "cn": field("cn")}) {
		return "", false
	}
	if set != 1 {
		d.errorf(n, "%s: a certificate entry gives exactly one of uri, dns or cn", what)
		return "", false
	}
	return name, name != ""
}

func (d *policyDecoder) grant(n *yaml.Node, what string, p *principal) {
	var project string
	var views *yaml.Node
	projectOK := false
	if !d.mapping(n, what+": grant", map[string]func(v *yaml.Node){
		"project": func(v *yaml.Node) { project, projectOK = d.str(v, what+": grant project") },
		"views":   func(v *yaml.Node) { views = v },
	}, "project", "views") || !projectOK || !d.sequence(views, what+": grant views") {
		return
	}
	if len(views.Content) == 0 {
		d.errorf(views, "%s: grant of project %q lists no views (use [\"*\"] for every view)", what, project)
		return
	}
	g := p.grants[project]
	if g.views == nil {
		g.views = map[string]bool{}
	}
	for _, v := range views.Content {
		name, ok := d.str(v, what+": grant views")
		if !ok {
			continue
		}
		if name == "*" {
			if len(views.Content) > 1 {
				d.errorf(v, "%s: \"*\" grants every view of project %q: list it alone", what, project)
			}
			g.all = true
			continue
		}
		g.views[name] = true
	}
	p.grants[project] = g
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "null"
		}
		return fmt.Sprintf("%s %q", strings.TrimPrefix(n.Tag, "!!"), n.Value)
	}
	return "nothing"
}

// redact shortens a value that may be a plain token pasted by mistake, so
// that an error message does not print it whole.
func redact(s string) string {
	if len(s) <= 8 {
		return s
	}
	return s[:4] + "…"
}
