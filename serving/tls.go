package serving

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/featurestore/featurestore/featurestore/reload"
)

// TLSOptions configures ServerTLS.
type TLSOptions struct {
	// CertFile and KeyFile hold the server's certificate chain and its
	// private key, PEM encoded.
	CertFile, KeyFile string
	// ClientCAFile, if set, holds the CA certificates (PEM) that client
	// certificates must chain to. Setting it turns on mutual TLS: a client
	// without a certificate signed by one of them fails the handshake.
	ClientCAFile string
	// ReloadInterval is the least time between two looks at the files;
	// DefaultReloadInterval when zero.
	ReloadInterval time.Duration
	// Registerer, if set, gets the TLS metrics.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// DefaultReloadInterval is how often the TLS and auth policy files are looked
// at for changes when no other interval is set.
const DefaultReloadInterval = reload.DefaultInterval

// ServerTLS is the server side of TLS, with certificate, key and client CA
// files that may be replaced while the server runs (certificate rotation).
//
// The files are looked at during TLS handshakes, at most once per
// ReloadInterval, and read again when their content changed and has stayed
// the same for one more look; the next handshakes use what they hold.
// Connections already open keep the certificates they were made with. New
// content that does not load (a key that does not match the certificate, a
// certificate expired or not yet valid) is logged and counted, and the
// previous certificates stay in use. Session tickets are
// off, so every connection is verified in full against the current client
// CAs: a CA taken out of the file admits no new connection.
type ServerTLS struct {
	opts    TLSOptions
	files   *reload.Value[tls.Config]
	reloads *prometheus.CounterVec
	expiry  prometheus.Gauge
}

// NewServerTLS loads the files of opts; an error names the file at fault.
func NewServerTLS(opts TLSOptions) (*ServerTLS, error) {
	if opts.CertFile == "" || opts.KeyFile == "" {
		return nil, errors.New("tls: a certificate file and a key file are both required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s := &ServerTLS{
		opts: opts,
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "featurestore_serving_tls_reloads_total",
			Help: "Reloads of changed TLS certificate, key or client CA files, by result (ok or error).",
		}, []string{"result"}),
		expiry: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "featurestore_serving_tls_certificate_expiry_timestamp_seconds",
			Help: "When the server certificate in use expires, in Unix seconds.",
		}),
	}
	paths := []string{opts.CertFile, opts.KeyFile}
	if opts.ClientCAFile != "" {
		paths = append(paths, opts.ClientCAFile)
	}
	files, err := reload.New(paths, opts.ReloadInterval, s.parse, s.reloaded)
	if err != nil {
		if errors.As(err, new(*fs.PathError)) {
			err = fmt.Errorf("tls: %w", err)
		}
		return nil, err
	}
	s.files = files
	for _, r := range reloadResults {
		s.reloads.WithLabelValues(r) // at 0 until the first reload
	}
	s.observe(files.Current())
	if opts.Registerer != nil {
		opts.Registerer.MustRegister(s.reloads, s.expiry)
	}
	return s, nil
}

// Config returns a server tls.Config that uses the current files at each
// handshake: TLS 1.2 at least, and client certificates required and verified
// when a client CA file is set. nextProtos are the ALPN protocols offered: a
// gRPC server adds h2 itself; an HTTP server wants "h2" and "http/1.1".
func (s *ServerTLS) Config(nextProtos ...string) *tls.Config {
	forClient := func(*tls.ClientHelloInfo) (*tls.Config, error) {
		c := s.files.Get().Clone()
		c.NextProtos = append(c.NextProtos, nextProtos...)
		return c, nil
	}
	return &tls.Config{
		MinVersion:             tls.VersionTLS12,
		NextProtos:             nextProtos,
		SessionTicketsDisabled: true,
		GetConfigForClient:     forClient,
	}
}

// MutualTLS reports whether client certificates are required.
func (s *ServerTLS) MutualTLS() bool { return s.opts.ClientCAFile != "" }

// parse builds the per-handshake configuration from the content of the
// certificate, key and (optional) client CA files.
func (s *ServerTLS) parse(data [][]byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(data[0], data[1])
	if err != nil {
		return nil, fmt.Errorf("tls certificate %s and key %s: %w", s.opts.CertFile, s.opts.KeyFile, err)
	}
	// At start (s.files not set yet) there is no previous pair to keep, and
	// a server that starts is easier to mend than one that does not: observe
	// warns. On reload an
	// expired or not yet valid certificate would replace one that clients
	// accept, so it is refused like a pair that does not match.
	if leaf := cert.Leaf; leaf != nil && s.files != nil {
		if now := time.Now(); now.After(leaf.NotAfter) {
			return nil, fmt.Errorf("tls certificate %s: expired at %s", s.opts.CertFile, leaf.NotAfter.Format(time.RFC3339))
		} else if now.Before(leaf.NotBefore) {
			// Valid soon (a certificate issued by a clock a little ahead):
			// tried again at every look until it is.
			return nil, fmt.Errorf("tls certificate %s: not valid before %s: %w", s.opts.CertFile, leaf.NotBefore.Format(time.RFC3339), reload.ErrNotYet)
		}
	}
	c := &tls.Config{
		MinVersion:             tls.VersionTLS12,
		Certificates:           []tls.Certificate{cert},
		SessionTicketsDisabled: true,
	}
	if len(data) > 2 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data[2]) {
			return nil, fmt.Errorf("tls client CA file %s: no PEM certificate found", s.opts.ClientCAFile)
		}
		c.ClientCAs = pool
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c, nil
}

func (s *ServerTLS) reloaded(c *tls.Config, err error) {
	if err != nil {
		s.reloads.WithLabelValues(reloadError).Inc()
		s.opts.Logger.Error("tls files changed but do not load; still serving the previous ones", "err", err)
		return
	}
	s.reloads.WithLabelValues(reloadOK).Inc()
	s.observe(c)
}

// observe logs the certificate now in use and sets the expiry gauge.
func (s *ServerTLS) observe(c *tls.Config) {
	leaf := c.Certificates[0].Leaf
	if leaf == nil {
		return
	}
	s.expiry.Set(float64(leaf.NotAfter.Unix()))
	log := s.opts.Logger.With("subject", leaf.Subject.String(), "not_after", leaf.NotAfter, "mutual_tls", c.ClientCAs != nil)
	if time.Now().After(leaf.NotAfter) {
		log.Warn("tls certificate loaded, but it has expired")
		return
	}
	log.Info("tls certificate loaded")
}
