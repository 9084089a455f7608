// Command etcd is upstream etcd's server entry point, built at the version
// Kubernetes pins, for clusters where the distribution's etcd is too old.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
