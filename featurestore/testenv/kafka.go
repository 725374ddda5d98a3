package testenv

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// KafkaLibsEnv names the directory of the Apache Kafka broker's jars that
// .ci/services.sh fetches, from which KafkaOwn starts brokers.
const KafkaLibsEnv = "FEATURESTORE_TEST_KAFKA_LIBS"

// Kafka is a single-node KRaft broker of a test's own (KafkaOwn), for tests
// that stop and start it, which the shared broker's other users could not
// bear.
type Kafka struct {
	t    testing.TB
	libs string
	dir  string // configuration, data and logs
	addr string // the PLAINTEXT listener, 127.0.0.1:port
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// KafkaOwn starts a broker of the test's own on free loopback ports, with
// the jars at FEATURESTORE_TEST_KAFKA_LIBS and the java on PATH, and returns
// it once it answers a metadata request. It stops when the test ends. Like
// the shared services, a missing variable skips the test on a developer's
// machine and fails it in CI.
func KafkaOwn(t testing.TB) *Kafka {
	t.Helper()
	libs := strings.TrimSpace(os.Getenv(KafkaLibsEnv))
	if libs == "" {
		missing(t, KafkaLibsEnv, "Kafka broker's jars")
		return nil
	}
	if _, err := exec.LookPath("java"); err != nil {
		t.Fatalf("%s is set but java is not on PATH: %v; %s", KafkaLibsEnv, err, hint)
	}
	k := &Kafka{t: t, libs: libs, dir: t.TempDir()}
	port, controller := freePort(t), freePort(t)
	k.addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	if err := k.configure(port, controller); err != nil {
		t.Fatal(err)
	}
	format := k.java("kafka.tools.StorageTool", "format", "--cluster-id", kafkaClusterID(),
		"--config", filepath.Join(k.dir, "server.properties"))
	if out, err := format.CombinedOutput(); err != nil {
		t.Fatalf("format the storage of a Kafka broker of the test's own: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		k.stop()
		if t.Failed() {
			k.showLog()
		}
	})
	k.Start()
	return k
}

// kafkaClusterID returns a new KRaft cluster id: 16 random bytes in
// URL-safe base64 without padding, as .ci/services.sh makes them, never
// one that starts with '-', which the storage tool would read as an
// option (one id in 64 did, failing the test that needed the broker).
func kafkaClusterID() string {
	for {
		id := make([]byte, 16)
		_, _ = rand.Read(id) // never fails (crypto/rand)
		if s := base64.RawURLEncoding.EncodeToString(id); s[0] != '-' {
			return s
		}
	}
}

// Brokers returns the broker's address, as KafkaBrokers does the shared
// one's.
func (k *Kafka) Brokers() []string { return []string{k.addr} }

// Start starts the broker, on the ports and with the data it had if it ran
// before, and waits until it answers a metadata request (a minute at
// most).
func (k *Kafka) Start() {
	k.t.Helper()
	if k.cmd != nil {
		k.t.Fatal("the broker is already running")
	}
	out, err := os.OpenFile(filepath.Join(k.dir, "stdout.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		k.t.Fatal(err)
	}
	cmd := k.java("kafka.Kafka", filepath.Join(k.dir, "server.properties"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := StartTied(cmd); err != nil {
		out.Close()
		k.t.Fatalf("start a Kafka broker of the test's own: %v", err)
	}
	k.cmd, k.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		_ = cmd.Wait()
		out.Close()
		close(done)
	}(k.done)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = waitFor(ctx, func() error {
		select {
		case <-k.done:
			return fmt.Errorf("the broker exited: %v", cmd.ProcessState)
		default:
		}
		return pingKafka(k.addr)
	})
	if err != nil {
		k.showLog()
		k.t.Fatalf("the Kafka broker of the test's own at %s does not answer: %v", k.addr, err)
	}
}

// Kill kills the broker with SIGKILL, as a crash or a lost machine would
// stop it, and waits until it has exited.
func (k *Kafka) Kill() {
	k.t.Helper()
	if k.cmd == nil {
		k.t.Fatal("the broker is not running")
	}
	k.stop()
}

func (k *Kafka) stop() {
	if k.cmd == nil {
		return
	}
	_ = k.cmd.Process.Kill()
	<-k.done
	k.cmd = nil
}

func (k *Kafka) java(args ...string) *exec.Cmd {
	return exec.Command("java", append([]string{
		"-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-XX:+ExitOnOutOfMemoryError",
		"-Djava.awt.headless=true", "-Dlog4j2.configurationFile=" + filepath.Join(k.dir, "log4j2.properties"),
		"-cp", filepath.Join(k.libs, "*"),
	}, args...)...)
}

// The configuration of the test brokers, the shared one's (.ci/services.sh)
// and those of the tests' own, with @NAME@ placeholders.
var (
	//go:embed kafka-server.properties
	kafkaServerProperties string
	//go:embed kafka-log4j2.properties
	kafkaLog4j2Properties string
)

// configure writes the broker's configuration: that of .ci/services.sh's
// broker, on other ports and directories, creating no topic by itself.
func (k *Kafka) configure(port, controller int) error {
	props := strings.NewReplacer("@HOST@", "127.0.0.1", "@PORT@", strconv.Itoa(port), "@CONTROLLER_PORT@", strconv.Itoa(controller),
		"@DATA@", filepath.Join(k.dir, "data"), "@AUTO_CREATE_TOPICS@", "false").Replace(kafkaServerProperties)
	log4j := strings.ReplaceAll(kafkaLog4j2Properties, "@LOG@", filepath.Join(k.dir, "server.log"))
	if err := os.WriteFile(filepath.Join(k.dir, "server.properties"), []byte(props), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(k.dir, "log4j2.properties"), []byte(log4j), 0o644)
}

// showLog logs the end of the broker's logs.
func (k *Kafka) showLog() {
	for _, name := range []string{"stdout.log", "server.log"} {
		b, err := os.ReadFile(filepath.Join(k.dir, name))
		if err != nil {
			continue
		}
		if len(b) > 8<<10 {
			b = b[len(b)-8<<10:]
		}
		k.t.Logf("end of %s of the Kafka broker at %s:\n%s", name, k.addr, b)
	}
}
