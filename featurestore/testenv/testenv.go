// Package testenv connects integration tests to the real Redis, Kafka,
// Python (with pyarrow, polars and duckdb), S3-compatible server, Google
// Cloud Storage emulator and Azure Blob Storage emulator that `make test`
// provides (.ci/services.sh, DESIGN.md section 8).
//
// They are found through seven environment variables:
//
//	FEATURESTORE_TEST_REDIS_ADDR=127.0.0.1:16379
//	FEATURESTORE_TEST_KAFKA_BROKERS=127.0.0.1:19092[,host:port...]
//	FEATURESTORE_TEST_KAFKA_LIBS=~/.cache/featurestore/kafka-<version>/libs
//	FEATURESTORE_TEST_PYTHON=~/.cache/featurestore/python/<hash>/bin/python
//	FEATURESTORE_TEST_S3_ENDPOINT=http://127.0.0.1:19900
//	FEATURESTORE_TEST_GCS_ENDPOINT=http://127.0.0.1:19910
//	FEATURESTORE_TEST_AZURE_ENDPOINT=http://127.0.0.1:19920
//
// When a variable is unset, a test that asks for the service is skipped on a
// developer's machine and fails in CI (CI=true or FEATURESTORE_REQUIRE_SERVICES=1),
// so that a CI run can never pass by skipping its integration tests. When a
// variable is set but nothing answers there, the test fails everywhere.
//
// Typical use:
//
//	func TestOnlineStore(t *testing.T) {
//		addr := testenv.RedisAddr(t)
//		brokers := testenv.KafkaBrokers(t)
//		topic := testenv.UniqueName(t, "events")
//		testenv.CreateTopic(t, brokers, topic, 3)
//		...
//	}
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/bloberror"
	"github.com/Azure/azure-sdk-for-go/sdk/storage/azblob/container"
	"github.com/segmentio/kafka-go"
)

// Names of the environment variables that locate the services.
const (
	RedisAddrEnv       = "FEATURESTORE_TEST_REDIS_ADDR"
	KafkaBrokersEnv    = "FEATURESTORE_TEST_KAFKA_BROKERS"
	RequireServicesEnv = "FEATURESTORE_REQUIRE_SERVICES"
	PythonEnv          = "FEATURESTORE_TEST_PYTHON"
	S3EndpointEnv      = "FEATURESTORE_TEST_S3_ENDPOINT"
	GCSEndpointEnv     = "FEATURESTORE_TEST_GCS_ENDPOINT"
	AzureEndpointEnv   = "FEATURESTORE_TEST_AZURE_ENDPOINT"
)

// S3Bucket is the bucket .ci/services.sh makes on the test S3 server, and
// GCSBucket the one it makes on the GCS emulator.
const (
	S3Bucket  = "featurestore-test"
	GCSBucket = "featurestore-test"
)

// AzureContainer is the container AzureURL makes on the Azure emulator, in
// Azurite's well-known development account.
const (
	AzureContainer = "featurestore-test"
	azuriteAccount = "devstoreaccount1"
	azuriteKey     = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

// dialTimeout bounds each check that a service answers.
const dialTimeout = 5 * time.Second

// hint tells the reader of a skip or failure how to get the services.
const hint = "run `make test` (starts Redis, Kafka, an S3 server and GCS and Azure emulators via .ci/services.sh), or `make services-up` and export the output of `.ci/services.sh env`"

// answered remembers services that already answered in this test binary, so
// that only the first test per address pays for the check.
var answered sync.Map // key "redis|addr" or "kafka|addr" -> struct{}

// RequireServices reports whether a missing service must fail the test
// instead of skipping it: in CI (CI=true) or when FEATURESTORE_REQUIRE_SERVICES=1.
func RequireServices() bool {
	return requireServices(os.Getenv)
}

func requireServices(getenv func(string) string) bool {
	if v, err := strconv.ParseBool(getenv(RequireServicesEnv)); err == nil && v {
		return true
	}
	v, err := strconv.ParseBool(getenv("CI"))
	return err == nil && v
}

// RedisAddr returns the host:port of the test Redis from
// FEATURESTORE_TEST_REDIS_ADDR after checking that it answers PING. It skips
// or fails the test when the variable is unset (see the package doc) and
// fails it when Redis does not answer.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := strings.TrimSpace(os.Getenv(RedisAddrEnv))
	if addr == "" {
		missing(t, RedisAddrEnv, "Redis")
		return ""
	}
	if _, ok := answered.Load("redis|" + addr); !ok {
		if err := pingRedis(addr); err != nil {
			t.Fatalf("%s=%s is set but Redis does not answer there: %v; %s", RedisAddrEnv, addr, err, hint)
		}
		answered.Store("redis|"+addr, struct{}{})
	}
	return addr
}

// KafkaBrokers returns the bootstrap brokers of the test Kafka from the
// comma-separated FEATURESTORE_TEST_KAFKA_BROKERS after checking that the
// first one answers a metadata request. It skips or fails the test when the
// variable is unset (see the package doc) and fails it when Kafka does not
// answer.
func KafkaBrokers(t testing.TB) []string {
	t.Helper()
	brokers := splitBrokers(os.Getenv(KafkaBrokersEnv))
	if len(brokers) == 0 {
		missing(t, KafkaBrokersEnv, "Kafka")
		return nil
	}
	if _, ok := answered.Load("kafka|" + brokers[0]); !ok {
		if err := pingKafka(brokers[0]); err != nil {
			t.Fatalf("%s=%s is set but Kafka does not answer there: %v; %s",
				KafkaBrokersEnv, strings.Join(brokers, ","), err, hint)
		}
		answered.Store("kafka|"+brokers[0], struct{}{})
	}
	return brokers
}

// S3URL returns an s3:// bucket URL (gocloud.dev/blob's form, which
// offline.Open takes) of a prefix of the test's own in S3Bucket on the
// S3-compatible server at FEATURESTORE_TEST_S3_ENDPOINT, after checking that
// the bucket answers, and sets for the test the AWS credentials and region
// that server accepts. It skips or fails the test when the variable is unset
// (see the package doc) and fails it when the server does not answer.
func S3URL(t testing.TB) string {
	t.Helper()
	endpoint := bucketEndpoint(t, S3EndpointEnv, "S3-compatible server", S3Bucket,
		func(e string) error { return pingHTTP(e + "/" + S3Bucket + "?max-keys=1") })
	if endpoint == nil {
		return ""
	}
	// The test server takes any credentials; without them the AWS SDK
	// would look for some, as far as the instance metadata service.
	for k, v := range map[string]string{"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_EC2_METADATA_DISABLED": "true",
		"AWS_CONFIG_FILE": os.DevNull, "AWS_SHARED_CREDENTIALS_FILE": os.DevNull} {
		t.Setenv(k, v)
	}
	q := url.Values{"endpoint": {endpoint.String()}, "region": {"us-east-1"}, "use_path_style": {"true"}, "prefix": {UniqueName(t, "") + "/"}}
	return "s3://" + S3Bucket + "?" + q.Encode()
}

// GCSURL returns a gs:// bucket URL (gocloud.dev/blob's form, which
// offline.Open takes) of a prefix of the test's own in GCSBucket on the
// Google Cloud Storage emulator at FEATURESTORE_TEST_GCS_ENDPOINT, after
// checking that the bucket answers, and points the GCS client at the
// emulator for the test (STORAGE_EMULATOR_HOST, which processes the test
// starts inherit). It skips or fails the test when the variable is unset
// (see the package doc) and fails it when the emulator does not answer.
func GCSURL(t testing.TB) string {
	t.Helper()
	endpoint := bucketEndpoint(t, GCSEndpointEnv, "Google Cloud Storage emulator (fake-gcs-server)", GCSBucket,
		func(e string) error { return pingHTTP(e + "/storage/v1/b/" + GCSBucket + "/o?maxResults=1") })
	if endpoint == nil {
		return ""
	}
	t.Setenv("STORAGE_EMULATOR_HOST", endpoint.Host)
	return "gs://" + GCSBucket + "?" + url.Values{"prefix": {UniqueName(t, "") + "/"}}.Encode()
}

// AzureURL returns an azblob:// container URL (gocloud.dev/blob's form,
// which offline.Open takes) of a prefix of the test's own in AzureContainer
// on the Azure Blob Storage emulator (Azurite) at
// FEATURESTORE_TEST_AZURE_ENDPOINT, after making the container if it is
// not there, and sets for the test the emulator's account and key
// (AZURE_STORAGE_ACCOUNT, AZURE_STORAGE_KEY, which processes the test
// starts inherit). It skips or fails the test when the variable is unset
// (see the package doc) and fails it when the emulator does not answer.
func AzureURL(t testing.TB) string {
	t.Helper()
	endpoint := bucketEndpoint(t, AzureEndpointEnv, "Azure Blob Storage emulator (Azurite)", AzureContainer, makeAzureContainer)
	if endpoint == nil {
		return ""
	}
	// The driver reads these once per process, at its first bucket;
	// every test sets the same.
	for k, v := range map[string]string{"AZURE_STORAGE_ACCOUNT": azuriteAccount, "AZURE_STORAGE_KEY": azuriteKey,
		"AZURE_STORAGE_SAS_TOKEN": "", "AZURE_STORAGE_CONNECTION_STRING": "", "AZURE_STORAGEBLOB_CONNECTIONSTRING": ""} {
		t.Setenv(k, v)
	}
	q := url.Values{"protocol": {"http"}, "domain": {endpoint.Host}, "localemu": {"true"}, "prefix": {UniqueName(t, "") + "/"}}
	return "azblob://" + AzureContainer + "?" + q.Encode()
}

// makeAzureContainer creates AzureContainer on the emulator at endpoint,
// unless it exists.
func makeAzureContainer(endpoint string) error {
	cred, err := container.NewSharedKeyCredential(azuriteAccount, azuriteKey)
	if err != nil {
		return err
	}
	c, err := container.NewClientWithSharedKeyCredential(endpoint+"/"+azuriteAccount+"/"+AzureContainer, cred, nil)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*dialTimeout)
	defer cancel()
	if _, err := c.Create(ctx, nil); err != nil && !bloberror.HasCode(err, bloberror.ContainerAlreadyExists) {
		return err
	}
	return nil
}

// bucketEndpoint returns the http://host:port endpoint of the object store
// named by the variable env, after checking once per endpoint that
// check(endpoint) passes: that bucket answers (or is made); nil if the test
// is skipped.
func bucketEndpoint(t testing.TB, env, service, bucket string, check func(endpoint string) error) *url.URL {
	t.Helper()
	endpoint := strings.TrimRight(strings.TrimSpace(os.Getenv(env)), "/")
	if endpoint == "" {
		missing(t, env, service)
		return nil
	}
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		t.Fatalf("%s=%s: want http://host:port", env, endpoint)
	}
	if _, ok := answered.Load(env + "|" + endpoint); !ok {
		if err := check(endpoint); err != nil {
			t.Fatalf("%s=%s is set but bucket %s does not answer there: %v; %s", env, endpoint, bucket, err, hint)
		}
		answered.Store(env+"|"+endpoint, struct{}{})
	}
	return u
}

// pingHTTP answers whether a GET of u is 200 OK.
func pingHTTP(u string) error {
	c := http.Client{Timeout: dialTimeout}
	resp, err := c.Get(u)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", u, resp.Status)
	}
	return nil
}

// PythonModules are the Python packages the interoperability tests use;
// .ci/requirements.txt pins their versions.
var PythonModules = []string{"pyarrow", "polars", "duckdb"}

// Python returns the Python interpreter named by FEATURESTORE_TEST_PYTHON
// (the virtual environment .ci/services.sh makes) after checking that it
// imports PythonModules. It skips or fails the test when the variable is unset
// (see the package doc) and fails it when the interpreter or a module is
// missing.
func Python(t testing.TB) string {
	t.Helper()
	py := strings.TrimSpace(os.Getenv(PythonEnv))
	if py == "" {
		missing(t, PythonEnv, "Python with "+strings.Join(PythonModules, ", "))
		return ""
	}
	if _, ok := answered.Load("python|" + py); !ok {
		script := "import " + strings.Join(PythonModules, ", ")
		out, err := exec.Command(py, "-c", script).CombinedOutput()
		if err != nil {
			t.Fatalf("%s=%s is set but `%s` fails there: %v\n%s%s", PythonEnv, py, script, err, out, hint)
		}
		answered.Store("python|"+py, struct{}{})
	}
	return py
}

func splitBrokers(s string) []string {
	var brokers []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			brokers = append(brokers, b)
		}
	}
	return brokers
}

// missing skips or fails the test for an unset variable.
func missing(t testing.TB, env, service string) {
	t.Helper()
	if RequireServices() {
		t.Fatalf("%s is not set but this test needs a real %s (CI=true or %s=1 forbids skipping); %s",
			env, service, RequireServicesEnv, hint)
	}
	t.Skipf("%s is not set; skipping test that needs a real %s; %s", env, service, hint)
}

// pingRedis speaks just enough RESP to know a Redis is there.
func pingRedis(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
		return err
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("send PING: %w", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("read PING reply: %w", err)
	}
	line = strings.TrimSpace(line)
	// -NOAUTH still proves a Redis is listening; the client will say more.
	if line != "+PONG" && !strings.HasPrefix(line, "-NOAUTH") {
		return fmt.Errorf("unexpected PING reply %q", line)
	}
	return nil
}

func pingKafka(broker string) error {
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	conn, err := (&kafka.Dialer{Timeout: dialTimeout}).DialContext(ctx, "tcp", broker)
	if err != nil {
		return err
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(dialTimeout)); err != nil {
		return err
	}
	brokers, err := conn.Brokers()
	if err != nil {
		return fmt.Errorf("metadata request: %w", err)
	}
	if len(brokers) == 0 {
		return errors.New("metadata lists no brokers")
	}
	return nil
}

// UniqueName returns a name that no other test, and no earlier run against the
// same services, uses: prefix, the test's name and a random suffix, made of
// characters that are valid in Kafka topic names, Redis keys and consumer
// group ids. Use it for topics, group ids and key prefixes.
func UniqueName(t testing.TB, prefix string) string {
	t.Helper()
	var b [6]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatalf("random suffix: %v", err)
	}
	name := sanitize(t.Name())
	// Kafka allows 249 characters; leave room for prefix and suffix.
	if len(name) > 150 {
		name = name[:150]
	}
	parts := make([]string, 0, 3)
	if p := sanitize(prefix); p != "" {
		parts = append(parts, p)
	}
	parts = append(parts, name, hex.EncodeToString(b[:]))
	return strings.Join(parts, "-")
}

// sanitize maps s to the characters legal in a Kafka topic name: [a-zA-Z0-9._-].
func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			return r
		default:
			return '_'
		}
	}, s)
}

// CreateTopic creates topic name with the given number of partitions
// (replication factor 1), waits until every partition has a leader, and
// deletes the topic when the test ends. An existing topic with the same
// partition count is accepted.
//
// The topic is created through kafka-go's DefaultTransport (which sends it to
// the controller) because that transport caches cluster metadata for 6s:
// creating it this way refreshes the cache, so Writers, Readers and Clients
// that use DefaultTransport with the same broker list see the topic at once
// instead of failing with UNKNOWN_TOPIC_OR_PARTITION. A kafka.Transport of
// your own made before CreateTopic has the same problem; make it afterwards.
func CreateTopic(t testing.TB, brokers []string, name string, partitions int) {
	t.Helper()
	if len(brokers) == 0 {
		t.Fatalf("create topic %q: no brokers", name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 30 * time.Second}
	resp, err := client.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err == nil {
		err = resp.Errors[name]
	}
	if err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		t.Fatalf("create topic %q with %d partitions at %s: %v", name, partitions, brokers[0], err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		resp, err := client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
		if err == nil {
			err = resp.Errors[name]
		}
		if err != nil {
			t.Logf("delete topic %q: %v", name, err)
		}
	})
	if err := waitForLeaders(ctx, brokers[0], name, partitions); err != nil {
		t.Fatalf("topic %q: %v", name, err)
	}
}

// waitForLeaders polls the metadata until topic has want partitions, each
// with a leader.
func waitForLeaders(ctx context.Context, broker, topic string, want int) error {
	dialer := &kafka.Dialer{Timeout: dialTimeout}
	var last error
	for {
		last = func() error {
			conn, err := dialer.DialContext(ctx, "tcp", broker)
			if err != nil {
				return err
			}
			defer conn.Close()
			parts, err := conn.ReadPartitions(topic)
			if err != nil {
				return err
			}
			if len(parts) != want {
				err := fmt.Errorf("metadata shows %d partitions, want %d", len(parts), want)
				if len(parts) > 0 {
					// An existing topic of another size will not change.
					return permanentError{err}
				}
				return err
			}
			for _, p := range parts {
				if p.Error != nil {
					return fmt.Errorf("partition %d: %w", p.ID, p.Error)
				}
				if p.Leader.Host == "" || p.Leader.ID < 0 {
					return fmt.Errorf("partition %d has no leader yet", p.ID)
				}
			}
			return nil
		}()
		if last == nil {
			return nil
		}
		var perm permanentError
		if errors.As(last, &perm) {
			return perm.err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no leader for every partition before the deadline: %w", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
