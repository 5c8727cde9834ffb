package main

import (
	"fmt"

	"github.com/spf13/cobra"
)

// newCompletionCmd replaces cobra's default completion command so that it
// carries examples and install paths, like every other command.
func newCompletionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "Print the shell completion script for ober",
		Long: `completion prints a script that makes the shell complete ober's commands,
flags and flag values (for example 'ober logs --service <TAB>').

'ober bootstrap' installs the bash script as
/usr/share/bash-completion/completions/ober; the examples show where each
shell looks for it otherwise.`,
		Example: `  ober completion bash > /usr/share/bash-completion/completions/ober
  ober completion zsh > "${fpath[1]}/_ober"
  ober completion fish > ~/.config/fish/completions/ober.fish
  source <(ober completion bash)   # this shell only`,
		ValidArgs:             []string{"bash", "zsh", "fish"},
		Args:                  cobra.MatchAll(cobra.ExactArgs(1), cobra.OnlyValidArgs),
		DisableFlagsInUseLine: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			root := cmd.Root()
			switch args[0] {
			case "bash":
				return root.GenBashCompletionV2(a.out, true)
			case "zsh":
				return root.GenZshCompletion(a.out)
			case "fish":
				return root.GenFishCompletion(a.out, true)
			}
			return fmt.Errorf("completion: unknown shell %q (want bash, zsh or fish)", args[0])
		},
	}
}

// completeWords makes a flag complete to a fixed set of values.
func completeWords(cmd *cobra.Command, flag string, words ...string) {
	_ = cmd.RegisterFlagCompletionFunc(flag, func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return words, cobra.ShellCompDirectiveNoFileComp
	})
}
