// Command respawn is the operator and GM command line: it runs the local
// supervisor (`respawn up`) and talks to the daemons' admin APIs.
package main

import (
	"fmt"
	"os"
)

func main() {
	a := newApp(os.Stdout)
	if err := a.root().Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "respawn:", err)
		os.Exit(1)
	}
}
