package cmd

import (
	"bytes"
	"flag"
	"fmt"
	"sort"
	"strings"
)

// configurationMarkdown renders docs/configuration.md from the commands'
// flag sets, so the page cannot drift from the code.
func configurationMarkdown() []byte {
	var b bytes.Buffer
	b.WriteString(`# Configuration reference

<!-- Generated from the code by 'go test ./featurestore/cmd -run TestConfigurationReference -update'; do not edit. -->

Every setting is a flag of a subcommand. Each flag can also be given as an
environment variable: upper case, dashes as underscores, prefixed with
` + "`FEATURESTORE_`" + ` (` + "`--redis-addr`" + ` is ` + "`FEATURESTORE_REDIS_ADDR`" + `). A flag given
on the command line wins over the environment. Three flags are read from the
command line only: ` + "`show --version`" + ` (deployments often set variables
named ` + "`*_VERSION`" + ` for other things), ` + "`apply --allow-breaking`" + ` and
` + "`export --allow-empty`" + ` (to be asked for each time, not left on in an
environment). Durations are written like
` + "`500ms`, `2s`, `1m`" + `.

`)
	for _, c := range commands() {
		fs := flag.NewFlagSet(c.name, flag.ContinueOnError)
		c.setup(fs)
		fmt.Fprintf(&b, "## featurestore %s\n\n`featurestore %s`\n\n%s\n\n", c.name, c.usage, strings.TrimSpace(c.long))
		var flags []*flag.Flag
		fs.VisitAll(func(f *flag.Flag) { flags = append(flags, f) })
		if len(flags) == 0 {
			b.WriteString("No flags.\n\n")
			continue
		}
		sort.Slice(flags, func(i, j int) bool { return flags[i].Name < flags[j].Name })
		b.WriteString("| flag | environment variable | default | meaning |\n|---|---|---|---|\n")
		for _, f := range flags {
			def := f.DefValue
			if def != "" {
				def = "`" + def + "`"
			}
			env := "(command line only)"
			if e := envOf(f.Name); e != "" {
				env = "`" + e + "`"
			}
			fmt.Fprintf(&b, "| `--%s` | %s | %s | %s |\n", f.Name, env, def, strings.ReplaceAll(f.Usage, "|", `\|`))
		}
		b.WriteString("\n")
	}
	return b.Bytes()
}
