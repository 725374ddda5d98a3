package cmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/featurestore/featurestore/featurestore/reload"
)

// kafkaSecurity says how connections to Kafka are secured: TLS, and SASL
// authentication. The same settings apply to every Kafka connection.
type kafkaSecurity struct {
	tls                    bool
	tlsFiles               tlsClientFiles
	mechanism, username    string
	password, passwordFile string
	// interval is how often the password file is looked at for changes;
	// reload.DefaultInterval when zero.
	interval time.Duration
}

func (k *kafkaSecurity) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.tls, "kafka-tls", false, "Connect to Kafka over TLS (implied by the other --kafka-tls flags), checking the brokers' certificates against the system's roots or --kafka-tls-ca.")
	k.tlsFiles.register(fs, "kafka", "Kafka brokers")
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", "", "SASL mechanism to authenticate to Kafka with: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.")
	fs.StringVar(&k.username, "kafka-sasl-username", "", "SASL user name.")
	fs.StringVar(&k.password, "kafka-sasl-password", "", "SASL password (prefer the environment variable or --kafka-sasl-password-file to the flag).")
	fs.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "File holding the SASL password (a trailing newline is ignored); read again when it changes.")
}

// dialer returns the dialer of Kafka connections, or nil for plain TCP
// without authentication. Errors name the flag at fault.
func (k *kafkaSecurity) dialer() (*kafka.Dialer, error) {
	useTLS := k.tls || k.tlsFiles.given()
	mech, err := k.sasl()
	if err != nil || (!useTLS && mech == nil) {
		return nil, err
	}
	d := &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true, SASLMechanism: mech}
	if useTLS {
		// TLS by a dialer of its own, whose files are read again when
		// they change: kafka-go's Dialer.TLS is fixed.
		td, err := k.tlsFiles.dialer(d.Timeout)
		if err != nil {
			return nil, err
		}
		d.DialFunc = td.DialContext
	}
	return d, nil
}

// sasl returns the SASL mechanism, or nil for none.
func (k *kafkaSecurity) sasl() (sasl.Mechanism, error) {
	if k.password != "" && k.passwordFile != "" {
		return nil, errors.New("give --kafka-sasl-password or --kafka-sasl-password-file, not both")
	}
	password := k.password
	var file *reload.Value[string]
	if k.passwordFile != "" {
		var err error
		file, err = reload.New([]string{k.passwordFile}, k.interval, func(data [][]byte) (*string, error) {
			pw := strings.TrimRight(string(data[0]), "\r\n")
			if pw == "" {
				return nil, fmt.Errorf("--kafka-sasl-password-file: %s is empty", k.passwordFile)
			}
			return &pw, nil
		}, logReloaded[string]("--kafka-sasl-password-file"))
		if err != nil {
			return nil, namingFlag("--kafka-sasl-password-file", err)
		}
		password = *file.Current()
	}
	name := strings.ToUpper(strings.TrimSpace(k.mechanism))
	if name == "" {
		if k.username != "" || password != "" {
			return nil, errors.New("a Kafka SASL user name or password needs --kafka-sasl-mechanism")
		}
		return nil, nil
	}
	if k.username == "" || password == "" {
		return nil, fmt.Errorf("--kafka-sasl-mechanism %s needs --kafka-sasl-username and a password", name)
	}
	var mechanism func(password string) (sasl.Mechanism, error)
	switch name {
	case "PLAIN":
		mechanism = func(password string) (sasl.Mechanism, error) {
			return plain.Mechanism{Username: k.username, Password: password}, nil
		}
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if name == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		mechanism = func(password string) (sasl.Mechanism, error) {
			m, err := scram.Mechanism(algo, k.username, password)
			if err != nil {
				return nil, fmt.Errorf("--kafka-sasl-mechanism %s: %w", name, err)
			}
			return m, nil
		}
	default:
		return nil, fmt.Errorf("--kafka-sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.mechanism)
	}
	m, err := mechanism(password)
	if err != nil || file == nil {
		return m, err
	}
	return &fileSASL{name: name, password: file, mechanism: mechanism}, nil
}

// fileSASL is a SASL mechanism whose password is read from its file again
// when the file changes: each new connection authenticates with the
// password the file holds then, so that a rotated password needs no
// restart.
type fileSASL struct {
	name      string
	password  *reload.Value[string]
	mechanism func(password string) (sasl.Mechanism, error)
}

func (m *fileSASL) Name() string { return m.name }

func (m *fileSASL) Start(ctx context.Context) (sasl.StateMachine, []byte, error) {
	mech, err := m.mechanism(*m.password.Get())
	if err != nil {
		return nil, nil, err
	}
	return mech.Start(ctx)
}
