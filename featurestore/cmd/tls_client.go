package cmd

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/featurestore/featurestore/featurestore/reload"
)

// tlsClientFiles are the TLS settings of the connections to a service
// (Kafka, Redis): the CA certificates its certificate must chain to, a
// client certificate for a service that requires mutual TLS, and the name
// its certificate must carry. Their flags are --<service>-tls-ca,
// --<service>-tls-cert, --<service>-tls-key and --<service>-tls-server-name.
type tlsClientFiles struct {
	service                   string // the flags' prefix: kafka, redis
	ca, cert, key, serverName string
	// interval is how often the files are looked at for changes;
	// reload.DefaultInterval when zero.
	interval time.Duration
}

// register registers the flags; servers names the servers in the help
// texts ("Kafka brokers").
func (f *tlsClientFiles) register(fs *flag.FlagSet, service, servers string) {
	f.service = service
	fs.StringVar(&f.ca, service+"-tls-ca", "", "CA certificates (PEM) the "+servers+"' certificates must chain to, instead of the system's roots; read again when it changes.")
	fs.StringVar(&f.cert, service+"-tls-cert", "", "Client certificate chain (PEM) for "+servers+" that require mutual TLS; with --"+service+"-tls-key. Both are read again when they change.")
	fs.StringVar(&f.key, service+"-tls-key", "", "Private key (PEM) of --"+service+"-tls-cert.")
	fs.StringVar(&f.serverName, service+"-tls-server-name", "", "Name the "+servers+"' certificates must carry, when it is not the host name they are reached by.")
}

// given reports whether any of the files or the name is set, which implies
// TLS.
func (f *tlsClientFiles) given() bool {
	return f.ca != "" || f.cert != "" || f.key != "" || f.serverName != ""
}

// reloadLog receives the lines of credential files read again (the process's logger,
// set by logFlags.logger: one command per process).
var reloadLog atomic.Pointer[slog.Logger]

// logReloaded returns the callback of the credential files of flags read
// again (reload.New).
func logReloaded[T any](flags string) func(*T, error) {
	return func(_ *T, err error) {
		log := reloadLog.Load()
		if log == nil {
			log = slog.Default()
		}
		if err != nil {
			log.Error("changed credential files do not load; connections go on with the previous ones", "flags", flags, "err", err)
			return
		}
		log.Info("changed credential files loaded; new connections use them", "flags", flags)
	}
}

// dialer returns the dialer of TLS connections (TLS 1.2 or newer) with the
// files, or an error naming the flag at fault. The CA and client
// certificate files are read again when they change (reload.Value), so
// that rotated certificates apply to the connections made after, without a
// restart; content that does not load is logged, and the previous one stays
// in use.
func (f *tlsClientFiles) dialer(timeout time.Duration) (*tlsDialer, error) {
	d := &tlsDialer{serverName: f.serverName, net: net.Dialer{Timeout: timeout, KeepAlive: 5 * time.Minute}}
	flagName := func(s string) string { return "--" + f.service + "-tls-" + s }
	if f.ca != "" {
		parse := func(data [][]byte) (*x509.CertPool, error) {
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(data[0]) {
				return nil, fmt.Errorf("%s: %s holds no PEM certificate", flagName("ca"), f.ca)
			}
			return pool, nil
		}
		roots, err := reload.New([]string{f.ca}, f.interval, parse, logReloaded[x509.CertPool](flagName("ca")))
		if err != nil {
			return nil, namingFlag(flagName("ca"), err)
		}
		d.roots = roots
	}
	switch {
	case f.cert != "" && f.key != "":
		parse := func(data [][]byte) (*tls.Certificate, error) {
			cert, err := tls.X509KeyPair(data[0], data[1])
			if err != nil {
				return nil, fmt.Errorf("%s and %s: %w", flagName("cert"), flagName("key"), err)
			}
			return &cert, nil
		}
		cert, err := reload.New([]string{f.cert, f.key}, f.interval, parse, logReloaded[tls.Certificate](flagName("cert")+", "+flagName("key")))
		if err != nil {
			return nil, namingFlag(flagName("cert")+" and "+flagName("key"), err)
		}
		d.cert = cert
	case f.cert != "":
		return nil, errors.New(flagName("cert") + " needs " + flagName("key"))
	case f.key != "":
		return nil, errors.New(flagName("key") + " needs " + flagName("cert"))
	}
	return d, nil
}

// namingFlag returns err of the files of flags: one reading them gets
// their name, while one parsing them names them already.
func namingFlag(flags string, err error) error {
	if pe := (*fs.PathError)(nil); errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", flags, err)
	}
	return err
}

// tlsDialer dials TLS connections, each with the certificates the files
// hold when it is made: the server's name is the host dialed unless
// --<service>-tls-server-name says otherwise.
type tlsDialer struct {
	serverName string
	roots      *reload.Value[x509.CertPool]   // nil: the system's roots
	cert       *reload.Value[tls.Certificate] // nil: none
	net        net.Dialer
}

// config returns the configuration of a connection to host.
func (d *tlsDialer) config(host string) *tls.Config {
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: d.serverName}
	if c.ServerName == "" {
		c.ServerName = host
	}
	if d.roots != nil {
		c.RootCAs = d.roots.Get()
	}
	if d.cert != nil {
		c.Certificates = []tls.Certificate{*d.cert.Get()}
	}
	return c
}

// DialContext dials addr and completes the TLS handshake, both within ctx
// and the dial timeout.
func (d *tlsDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if d.net.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.net.Timeout)
		defer cancel()
	}
	raw, err := d.net.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conn := tls.Client(raw, d.config(host))
	if err := conn.HandshakeContext(ctx); err != nil {
		raw.Close()
		return nil, err
	}
	return conn, nil
}
