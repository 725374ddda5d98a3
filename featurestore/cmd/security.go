package cmd

import (
	"flag"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestore/featurestore/serving"
)

// securityFlags are the TLS and access control settings of the servers of
// 'featurestore serve'.
type securityFlags struct {
	tlsCert, tlsKey, tlsClientCA string
	authPolicy                   string
}

func (s *securityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&s.tlsCert, "tls-cert", "", "Certificate chain (PEM) of the server; with --tls-key, the server speaks TLS 1.2 or newer only. Re-read when the file changes.")
	fs.StringVar(&s.tlsKey, "tls-key", "", "Private key (PEM) of --tls-cert. Re-read when the file changes.")
	fs.StringVar(&s.tlsClientCA, "tls-client-ca", "", "CA certificates (PEM) that client certificates must chain to; set to require mutual TLS. Re-read when the file changes.")
	fs.StringVar(&s.authPolicy, "auth-policy", "", "Access policy file (YAML): principals, their token hashes or certificate names, and the feature views granted to them. Set to deny every call the policy does not grant (health checks stay open). Re-read when the file changes.")
}

// check reports flags that do not go together.
func (s *securityFlags) check() error {
	switch {
	case (s.tlsCert == "") != (s.tlsKey == ""):
		return fmt.Errorf("%w: --tls-cert and --tls-key go together", errUsage)
	case s.tlsClientCA != "" && s.tlsCert == "":
		return fmt.Errorf("%w: --tls-client-ca needs --tls-cert and --tls-key", errUsage)
	}
	return nil
}

// build loads the TLS files and the access policy; either result is nil when
// its flags are not set.
func (s *securityFlags) build(reg prometheus.Registerer, log *slog.Logger) (*serving.ServerTLS, *serving.Auth, error) {
	var st *serving.ServerTLS
	if s.tlsCert != "" {
		var err error
		st, err = serving.NewServerTLS(serving.TLSOptions{CertFile: s.tlsCert, KeyFile: s.tlsKey, ClientCAFile: s.tlsClientCA, Registerer: reg, Logger: log})
		if err != nil {
			return nil, nil, err
		}
	}
	if s.authPolicy == "" {
		if st != nil && st.MutualTLS() {
			log.Info("client certificates are verified, but with no --auth-policy every verified client may read every feature view")
		}
		return st, nil, nil
	}
	auth, err := serving.NewAuth(serving.AuthOptions{PolicyFile: s.authPolicy, Registerer: reg, Logger: log})
	if err != nil {
		return nil, nil, err
	}
	if st == nil {
		log.Warn("--auth-policy without --tls-cert: bearer tokens travel in clear text; use TLS unless a proxy on the same host terminates it")
	}
	return st, auth, nil
}
