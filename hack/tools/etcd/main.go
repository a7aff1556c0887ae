// Command etcd is etcd's own entry point (go.etcd.io/etcd/v3's main.go), built against the
// published server module.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
