package cmd

import (
	"strings"
	"testing"

	"github.com/featurestore/featurestore/featurestore/testenv"
)

// TestRedisClusterNodeNeedsClusterFlag: one node's address of a Redis
// Cluster without --redis-cluster is refused at start, naming the flag;
// before, the commands ran against the node as a standalone Redis and
// every key of another node failed with MOVED, one call at a time.
func TestRedisClusterNodeNeedsClusterFlag(t *testing.T) {
	nodes := testenv.RedisCluster(t, 3)
	code, out, errOut := runCLI(t, nil, "versions", "--redis-addr", nodes[0])
	if code != 1 || !strings.Contains(errOut, "node of a Redis Cluster: pass --redis-cluster") {
		t.Errorf("versions on a cluster node without --redis-cluster: exit %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, nil, "versions", "--redis-addr", nodes[0], "--redis-cluster")
	if code != 0 || strings.Contains(errOut, "node of a Redis Cluster") {
		t.Errorf("versions with --redis-cluster: exit %d\n%s%s", code, out, errOut)
	}
}
