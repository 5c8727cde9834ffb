package wizard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/pmezard/go-difflib/difflib"

	"github.com/ober-ingress/ober/control/config"
	"github.com/ober-ingress/ober/control/lib/atomicfile"
)

// Plan is a new ober.yaml, checked and ready to be written.
type Plan struct {
	Path string
	// Old is the file as it is now; nil when there is none.
	Old []byte
	New []byte
	// Config is New as `ober run` loads it.
	Config *config.Config

	in  *lineReader // the terminal, when the answers came from one
	out io.Writer
}

// Prepare reads the file at o.Path (when there is one), asks the
// questions and returns the new file, checked by control/config. It
// writes nothing.
func Prepare(ctx context.Context, o Options) (*Plan, error) {
	old, err := os.ReadFile(o.Path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = nil
	case err != nil:
		return nil, fmt.Errorf("read %s: %w", o.Path, unwrapPath(err))
	}
	doc, err := parseDocument(old)
	if err != nil {
		return nil, fmt.Errorf("%s: %v (fix it, or move it away to start afresh)", o.Path, err)
	}
	var cur *config.Config
	if old != nil {
		cur = decodeCurrent(old)
	}
	var in *lineReader
	if o.In != nil {
		in = newLineReader(o.In)
	}
	a, err := ask(ctx, o, cur, in)
	if err != nil {
		return nil, err
	}
	apply(doc, a)
	data, err := doc.Bytes()
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", o.Path, err)
	}
	cfg, err := config.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("the new %s would be invalid, nothing written: %s", o.Path, config.OneLine(err))
	}
	return &Plan{Path: o.Path, Old: old, New: data, Config: cfg, in: in, out: o.Out}, nil
}

// Confirm asks a yes/no question on the terminal the answers came from;
// Enter means yes. Without a terminal it says yes.
func (p *Plan) Confirm(ctx context.Context, question string) (bool, error) {
	if p.in == nil {
		return true, nil
	}
	for {
		fmt.Fprintf(p.out, "%s [Y/n] ", question)
		text, err := p.in.read(ctx)
		if err != nil {
			return false, err
		}
		if strings.TrimSpace(text) == "" {
			return true, nil
		}
		yes, err := parseYesNo(text)
		if err == nil {
			return yes, nil
		}
		fmt.Fprintf(p.out, "  %v\n", err)
	}
}

// Changed reports whether writing the plan changes the file.
func (p *Plan) Changed() bool { return p.Old == nil || string(p.Old) != string(p.New) }

// Write puts the new file in place the way nothing can see half of it:
// a temporary file in the same directory, loaded with config.Load as
// `ober run` will load it, then renamed over the old one, which stays as
// <path>.bak. The file is mode 0640 and keeps the old one's owner.
func (p *Plan) Write() (backup string, err error) {
	dir := filepath.Dir(p.Path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", dir, unwrapPath(err))
	}
	tmp, err := atomicfile.WriteTemp(p.Path, p.New, 0o640)
	if err != nil {
		return "", err
	}
	defer func() {
		if err != nil {
			os.Remove(tmp)
		}
	}()
	if _, err := config.Load(tmp); err != nil {
		msg := strings.ReplaceAll(config.OneLine(err), "config "+tmp+": ", "")
		return "", fmt.Errorf("the new %s would be invalid, nothing written: %s", p.Path, strings.ReplaceAll(msg, tmp, p.Path))
	}
	if _, err := os.Stat(p.Path); err == nil {
		backup = p.Path + ".bak"
		if err := keepBackup(p.Path, backup); err != nil {
			return "", err
		}
	}
	if err := atomicfile.Commit(tmp, p.Path); err != nil {
		return "", err
	}
	return backup, nil
}

// keepBackup makes bak a copy of path: a hard link where the file system
// has them, replaced atomically.
func keepBackup(path, bak string) error {
	tmp := bak + ".new"
	os.Remove(tmp)
	if err := os.Link(path, tmp); err != nil {
		data, rerr := os.ReadFile(path)
		if rerr != nil {
			return fmt.Errorf("back up %s: %w", path, unwrapPath(rerr))
		}
		if werr := atomicfile.Write(bak, data, 0o640); werr != nil {
			return fmt.Errorf("back up %s: %w", path, werr)
		}
		return nil
	}
	if err := os.Rename(tmp, bak); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("back up %s: %w", path, unwrapPath(err))
	}
	return nil
}

// Diff is the unified diff that turns old into new; oldPath is empty
// for a file that does not exist yet (it diffs against /dev/null). It is
// empty when nothing changes.
func Diff(oldPath, newPath string, old, new []byte) string {
	from := oldPath
	if from == "" {
		from = "/dev/null"
	}
	// difflib.SplitLines would add an empty last line to text that ends
	// in a newline.
	lines := func(b []byte) []string {
		if len(b) == 0 {
			return nil
		}
		l := strings.SplitAfter(string(b), "\n")
		if l[len(l)-1] == "" {
			l = l[:len(l)-1]
		} else {
			l[len(l)-1] += "\n\\ No newline at end of file\n"
		}
		return l
	}
	text, _ := difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: lines(old), B: lines(new),
		FromFile: from, ToFile: newPath, Context: 3,
	})
	if text != "" && !strings.HasSuffix(text, "\n") {
		text += "\n"
	}
	return text
}

// unwrapPath drops the path from an *fs.PathError: the messages here
// name the file themselves.
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
