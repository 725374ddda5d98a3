package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// SentinelRedis is a Redis master with one replica, monitored by a Redis
// Sentinel (RedisSentinel).
type SentinelRedis struct {
	// Master is the name the Sentinel knows the master by, Sentinel the
	// Sentinel's address.
	Master, Sentinel string
	// Primary and Replica are the servers as started; after a failover
	// Replica is the master.
	Primary, Replica *RedisNode
}

// RedisSentinel starts a Redis master and a replica of it, and a Sentinel
// that monitors them (quorum 1), which fails over a second after the
// master stops answering; all on free loopback ports, stopped when the
// test ends. It returns once the replica has every write and the Sentinel
// knows both. Like RedisCluster it skips under -short, and without the
// binary on a developer's machine.
func RedisSentinel(t testing.TB) *SentinelRedis {
	t.Helper()
	return startSentinel(t, nil, nil)
}

// RedisSentinelTLS is RedisSentinel with every server speaking TLS only,
// with the certificate and key of the given PEM files, trusting caFile:
// clients, replication and the Sentinel's connections alike. Clients need
// no certificate of their own.
func RedisSentinelTLS(t testing.TB, certFile, keyFile, caFile string) *SentinelRedis {
	t.Helper()
	pem, err := os.ReadFile(caFile)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		t.Fatalf("%s holds no PEM certificate", caFile)
	}
	return startSentinel(t, []string{"--tls-cert-file", certFile, "--tls-key-file", keyFile, "--tls-ca-cert-file", caFile,
		"--tls-auth-clients", "no", "--tls-replication", "yes"}, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12})
}

// startSentinel starts the servers of RedisSentinel, on TLS ports only
// with tlsArgs (a client's configuration tlsConf) when they are given.
func startSentinel(t testing.TB, tlsArgs []string, tlsConf *tls.Config) *SentinelRedis {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: not starting Redis Sentinel")
	}
	bin := redisServer(t, "the Redis Sentinel test")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// listen returns the arguments of a server on port: plaintext, or
	// TLS only.
	listen := func(port int) []string {
		if tlsArgs == nil {
			return []string{"--bind", "127.0.0.1", "--port", strconv.Itoa(port)}
		}
		return append([]string{"--bind", "127.0.0.1", "--port", "0", "--tls-port", strconv.Itoa(port)}, tlsArgs...)
	}
	server := func(label string, args ...string) *RedisNode {
		port := freePort(t)
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		n := startRedis(t, bin, t.TempDir(), label+" "+addr, append(listen(port), args...)...)
		n.Addr = addr
		n.awaitPing(t, tlsConf)
		return n
	}
	s := &SentinelRedis{Master: "featurestore-test"}
	s.Primary = server("the master", "--repl-diskless-sync-delay", "0")
	host, port, _ := net.SplitHostPort(s.Primary.Addr)
	s.Replica = server("the replica", "--repl-diskless-sync-delay", "0", "--replicaof", host, port)
	if err := waitReplicated(ctx, &redis.Options{Addr: s.Primary.Addr, TLSConfig: tlsConf}); err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	conf := filepath.Join(dir, "sentinel.conf") // Sentinel rewrites it
	err := os.WriteFile(conf, fmt.Appendf(nil, `sentinel monitor %[1]s %[2]s %[3]s 1
sentinel down-after-milliseconds %[1]s 1000
sentinel failover-timeout %[1]s 10000
`, s.Master, host, port), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	sport := freePort(t)
	s.Sentinel = net.JoinHostPort("127.0.0.1", strconv.Itoa(sport))
	startRedis(t, bin, dir, "the Sentinel "+s.Sentinel, append([]string{conf, "--sentinel"}, listen(sport)...)...).Addr = s.Sentinel
	sc := redis.NewSentinelClient(&redis.Options{Addr: s.Sentinel, TLSConfig: tlsConf})
	defer sc.Close()
	err = waitFor(ctx, func() error {
		addr, err := sc.GetMasterAddrByName(ctx, s.Master).Result()
		if err != nil {
			return err
		}
		if got := net.JoinHostPort(addr[0], addr[1]); got != s.Primary.Addr {
			return fmt.Errorf("the Sentinel's master is %s", got)
		}
		replicas, err := sc.Replicas(ctx, s.Master).Result()
		if err != nil {
			return err
		}
		if len(replicas) != 1 || replicas[0]["flags"] != "slave" {
			return fmt.Errorf("the Sentinel's replicas: %v", replicas)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("the Sentinel at %s does not monitor the master %s and its replica: %v", s.Sentinel, s.Primary.Addr, err)
	}
	return s
}
