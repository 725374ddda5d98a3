package cmd

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
)

// tlsClientFiles are the TLS settings of the connections to a service
// (Kafka, Redis): the CA certificates its certificate must chain to, a
// client certificate for a service that requires mutual TLS, and the name
// its certificate must carry. Their flags are --<service>-tls-ca,
// --<service>-tls-cert, --<service>-tls-key and --<service>-tls-server-name.
type tlsClientFiles struct {
	service                   string // the flags' prefix: kafka, redis
	ca, cert, key, serverName string
}

// register registers the flags; servers names the servers in the help
// texts ("Kafka brokers").
func (f *tlsClientFiles) register(fs *flag.FlagSet, service, servers string) {
	f.service = service
	fs.StringVar(&f.ca, service+"-tls-ca", "", "CA certificates (PEM) the "+servers+"' certificates must chain to, instead of the system's roots.")
	fs.StringVar(&f.cert, service+"-tls-cert", "", "Client certificate chain (PEM) for "+servers+" that require mutual TLS; with --"+service+"-tls-key.")
	fs.StringVar(&f.key, service+"-tls-key", "", "Private key (PEM) of --"+service+"-tls-cert.")
	fs.StringVar(&f.serverName, service+"-tls-server-name", "", "Name the "+servers+"' certificates must carry, when it is not the host name they are reached by.")
}

// given reports whether any of the files or the name is set, which implies
// TLS.
func (f *tlsClientFiles) given() bool {
	return f.ca != "" || f.cert != "" || f.key != "" || f.serverName != ""
}

// config returns the TLS client configuration, TLS 1.2 or newer. Errors
// name the flag at fault.
func (f *tlsClientFiles) config() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: f.serverName}
	flagName := func(s string) string { return "--" + f.service + "-tls-" + s }
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", flagName("ca"), err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s: %s holds no PEM certificate", flagName("ca"), f.ca)
		}
	}
	switch {
	case f.cert != "" && f.key != "":
		cert, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("%s and %s: %w", flagName("cert"), flagName("key"), err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case f.cert != "":
		return nil, errors.New(flagName("cert") + " needs " + flagName("key"))
	case f.key != "":
		return nil, errors.New(flagName("key") + " needs " + flagName("cert"))
	}
	return cfg, nil
}
