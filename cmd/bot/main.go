// Command bot drives a respawn cluster for load tests and chaos runs. Each
// scenario is a subcommand in its own file (save-load in saveload.go).
package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "bot",
		Short:         "Load generator, client simulator and chaos driver for respawn",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	for _, add := range []func() *cobra.Command{
		saveLoadCommand,
		chaosCommand,
		playCommand,
	} {
		root.AddCommand(add())
	}
	if err := root.Execute(); err != nil {
		fmt.Fprintln(os.Stderr, "bot:", err)
		os.Exit(1)
	}
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
