package cmd

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"
)

// kafkaSecurity says how connections to Kafka are secured: TLS, and SASL
// authentication. The same settings apply to every Kafka connection.
type kafkaSecurity struct {
	tls                    bool
	tlsFiles               tlsClientFiles
	mechanism, username    string
	password, passwordFile string
}

func (k *kafkaSecurity) register(fs *flag.FlagSet) {
	fs.BoolVar(&k.tls, "kafka-tls", false, "Connect to Kafka over TLS (implied by the other --kafka-tls flags), checking the brokers' certificates against the system's roots or --kafka-tls-ca.")
	k.tlsFiles.register(fs, "kafka", "Kafka brokers")
	fs.StringVar(&k.mechanism, "kafka-sasl-mechanism", "", "SASL mechanism to authenticate to Kafka with: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; empty for none.")
	fs.StringVar(&k.username, "kafka-sasl-username", "", "SASL user name.")
	fs.StringVar(&k.password, "kafka-sasl-password", "", "SASL password (prefer the environment variable or --kafka-sasl-password-file to the flag).")
	fs.StringVar(&k.passwordFile, "kafka-sasl-password-file", "", "File holding the SASL password (a trailing newline is ignored).")
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
		if d.TLS, err = k.tlsFiles.config(); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// sasl returns the SASL mechanism, or nil for none.
func (k *kafkaSecurity) sasl() (sasl.Mechanism, error) {
	if k.password != "" && k.passwordFile != "" {
		return nil, errors.New("give --kafka-sasl-password or --kafka-sasl-password-file, not both")
	}
	password := k.password
	if k.passwordFile != "" {
		b, err := os.ReadFile(k.passwordFile)
		if err != nil {
			return nil, fmt.Errorf("--kafka-sasl-password-file: %w", err)
		}
		password = strings.TrimRight(string(b), "\r\n")
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
	switch name {
	case "PLAIN":
		return plain.Mechanism{Username: k.username, Password: password}, nil
	case "SCRAM-SHA-256", "SCRAM-SHA-512":
		algo := scram.SHA256
		if name == "SCRAM-SHA-512" {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, k.username, password)
		if err != nil {
			return nil, fmt.Errorf("--kafka-sasl-mechanism %s: %w", name, err)
		}
		return m, nil
	}
	return nil, fmt.Errorf("--kafka-sasl-mechanism %q: want PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", k.mechanism)
}
