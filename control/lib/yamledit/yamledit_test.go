package yamledit

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// site is a file in the styles operators write: four-space indents, a
// flow list, notes above keys and items, a comment at the end of a line,
// quoting, and a list of mappings.
const site = `# ingress-a
node:
    name: edge-1   # rack 7
    interfaces: [eth0, eth1]

# Who reaches the node.
peers:
    # the left router
    - address: 10.0.0.1
      asn: 65000
    - address: "10.0.0.2"   # right
      asn: 65000
      bfd:
          enabled: true

tags:
    - a
    # about b
    - b
`

func parse(t *testing.T, text string) *Document {
	t.Helper()
	d, err := Parse([]byte(text))
	require.NoError(t, err)
	require.NotNil(t, d.Root())
	return d
}

func text(t *testing.T, d *Document) string {
	t.Helper()
	b, err := d.Bytes()
	require.NoError(t, err)
	return string(b)
}

func TestUntouchedIsByteForByte(t *testing.T) {
	for _, in := range []string{
		site,
		strings.ReplaceAll(site, "\n", "\r\n"),
		strings.TrimSuffix(site, "\n"),
		"a: 1\n\n\n# trailing notes\n",
		"--- # a document marker\nx: {y: [1, 2]}\n...\n",
	} {
		d := parse(t, in)
		require.Equal(t, in, text(t, d))
	}
}

func TestSameValuesChangeNothing(t *testing.T) {
	d := parse(t, site)
	r := d.Root()
	node := Get(r, "node")
	Set(node, "name", Str("edge-1"), "")
	Set(node, "interfaces", List(Get(node, "interfaces"), []string{"eth0", "eth1"}, yaml.FlowStyle), "")
	Set(r, "tags", List(Get(r, "tags"), []string{"a", "b"}, 0), "")
	peer := Get(r, "peers").Content[1]
	Set(peer, "address", Str("10.0.0.2"), "") // quoted in the file: the text stays
	Set(peer, "asn", Int(65000), "")
	Set(Get(peer, "bfd"), "enabled", Bool(true), "")
	require.Equal(t, site, text(t, d))
}

func TestChangedValueKeepsItsComment(t *testing.T) {
	d := parse(t, site)
	Set(Get(d.Root(), "node"), "name", Str("edge-2"), "")
	require.Equal(t, strings.Replace(site, "name: edge-1   # rack 7", "name: edge-2   # rack 7", 1), text(t, d))
}

func TestNewKeysTakeTheFilesIndentation(t *testing.T) {
	d := parse(t, site)
	r := d.Root()
	node := Get(r, "node")
	Set(node, "state_dir", Str("/var/lib/ober"), "where the state lives")
	peer := Get(r, "peers").Content[0]
	Set(Mapping(peer, "bfd", ""), "enabled", Bool(false), "")
	want := strings.Replace(site, "    interfaces: [eth0, eth1]\n",
		"    interfaces: [eth0, eth1]\n    # where the state lives\n    state_dir: /var/lib/ober\n", 1)
	want = strings.Replace(want, "      asn: 65000\n    - address",
		"      asn: 65000\n      bfd:\n          enabled: false\n    - address", 1)
	require.Equal(t, want, text(t, d))
}

func TestRemovedKeyTakesTheCommentsAboveIt(t *testing.T) {
	d := parse(t, site)
	Remove(d.Root(), "peers")
	require.Equal(t, strings.Replace(site, site[strings.Index(site, "# Who reaches"):strings.Index(site, "tags:")], "", 1), text(t, d))
}

func TestListItemsKeepTheirCommentsWhereverTheyGo(t *testing.T) {
	d := parse(t, site)
	r := d.Root()
	Set(r, "tags", List(Get(r, "tags"), []string{"b", "c", "a"}, 0), "")
	peers := Get(r, "peers")
	peers.Content = []*yaml.Node{peers.Content[1], peers.Content[0]}
	want := strings.Replace(site, "    - a\n    # about b\n    - b\n", "    # about b\n    - b\n    - c\n    - a\n", 1)
	// Each peer goes with its lines and the comment above it.
	left := "    # the left router\n    - address: 10.0.0.1\n      asn: 65000\n"
	end := "          enabled: true\n"
	right := want[strings.Index(want, `    - address: "10.0.0.2"`) : strings.Index(want, end)+len(end)]
	require.Contains(t, want, left+right)
	want = strings.Replace(want, left+right, right+left, 1)
	require.Equal(t, want, text(t, d))

	Set(r, "tags", List(Get(r, "tags"), nil, 0), "")
	require.Contains(t, text(t, d), "\ntags: []\n", "an empty block list is written in flow style")
}

func TestNewTopLevelKeys(t *testing.T) {
	// A file that sets its sections apart gets a blank line before a new
	// one; one that does not, none, unless it ends with a comment.
	d := parse(t, site)
	Set(d.Root(), "api", &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{Str("listen"), Str("127.0.0.1:8404")}}, "The API stays local.")
	require.Equal(t, site+"\n# The API stays local.\napi:\n    listen: 127.0.0.1:8404\n", text(t, d))

	d = parse(t, site)
	d.Compact()
	Set(d.Root(), "zone", Str("a"), "")
	require.Equal(t, site+"zone: a\n", text(t, d), "a compact edit adds no blank line")

	d = parse(t, "a: 1\nb: 2")
	Set(d.Root(), "c", List(nil, []string{"x"}, 0), "")
	require.Equal(t, "a: 1\nb: 2\nc:\n  - x\n", text(t, d), "the missing line end is added")

	d = parse(t, "a: 1\n# the end\n")
	Set(d.Root(), "c", Int(3), "")
	require.Equal(t, "a: 1\n# the end\n\nc: 3\n", text(t, d))

	d = parse(t, "a: 1\r\n")
	Set(d.Root(), "b", Str("yes"), "")
	require.Equal(t, "a: 1\r\nb: \"yes\"\r\n", text(t, d), "the file's line ends; a string YAML 1.1 reads as a boolean is quoted")
}

func TestChangedShapes(t *testing.T) {
	d := parse(t, "a: ~ # later\nb: [x, y]   # two\nc: {k: v}\nd: 1\n")
	r := d.Root()
	Set(r, "a", List(nil, []string{"p", "q"}, 0), "")
	Set(r, "b", List(Get(r, "b"), []string{"y", "z[1-2]"}, yaml.FlowStyle), "")
	Set(Get(r, "c"), "k", Str("w"), "")
	Set(r, "d", &yaml.Node{Kind: yaml.MappingNode, Content: []*yaml.Node{Str("e"), Int(2)}}, "")
	require.Equal(t, "a: # later\n  - p\n  - q\nb: [y, 'z[1-2]']   # two\nc: {k: w}\nd:\n  e: 2\n", text(t, d))
}

func TestEmptyDocument(t *testing.T) {
	for _, in := range []string{"", "~\n", "# only a note\n"} {
		d := parse(t, in)
		require.True(t, d.Empty())
		d.SetHeader("written by a test")
		r := d.Root()
		Set(r, "node", &yaml.Node{Kind: yaml.MappingNode}, "")
		n := Mapping(r, "node", "")
		Set(n, "name", Str("n1"), "")
		n.Content[1].LineComment = "# the name"
		Set(r, "vips", List(nil, []string{"10.0.0.1"}, 0), "Addresses clients connect to.")
		svc := &yaml.Node{Kind: yaml.MappingNode, HeadComment: "The one service."}
		Set(svc, "name", Str("https"), "")
		Set(svc, "port", Int(443), "")
		Set(r, "services", &yaml.Node{Kind: yaml.SequenceNode, Content: []*yaml.Node{svc}}, "")
		require.Equal(t, `# written by a test

node:
  name: n1 # the name

# Addresses clients connect to.
vips:
  - 10.0.0.1

services:
  # The one service.
  - name: https
    port: 443
`, text(t, d))
	}
	d, err := Parse([]byte("- a\n"))
	require.NoError(t, err)
	require.Nil(t, d.Root(), "a list is not a mapping")
}

func TestLines(t *testing.T) {
	d := parse(t, "a: [x,\n  y]\nb:\n  - z\n\n# c\nc: 1\n")
	r := d.Root()
	require.Equal(t, 2, d.Lines(r.Content[0]))
	require.Equal(t, 2, d.Lines(r.Content[2]), "the notes before the next key are not the list's")
	require.Equal(t, 1, d.Lines(r.Content[4]))
	require.Zero(t, d.Lines(Str("new")))
}

func TestItemsWrittenAnewWhenTheirTextCannotBeKept(t *testing.T) {
	// The first key of a mapping item shares the "-" line: without it the
	// item is written anew, in the file's indentation.
	d := parse(t, site)
	peer := Get(d.Root(), "peers").Content[1]
	Remove(peer, "address")
	require.Equal(t, strings.Replace(site, `    - address: "10.0.0.2"   # right
      asn: 65000
      bfd:
          enabled: true
`, `    - asn: 65000
      bfd:
          enabled: true
`, 1), text(t, d))

	// Items whose "-" stands alone are written anew, with the comments
	// read with them.
	d = parse(t, "l:\n  # items\n  -\n    a: 1\n  -\n    a: 2\nz: 0\n")
	l := Get(d.Root(), "l")
	Set(l.Content[1], "a", Int(3), "")
	require.Equal(t, "l:\n  # items\n  - a: 1\n  - a: 3\nz: 0\n", text(t, d))
}

func TestChangedFlowItemKeepsItsCommentColumn(t *testing.T) {
	// A flow item is written again as a whole; the comment that ends its
	// line stays where it was, as the comment after a changed value does.
	in := "l:\n  - {a: 1, b: 2}     # first\n  - {a: 3}  # second\n"
	d := parse(t, in)
	Set(Get(d.Root(), "l").Content[0], "b", Int(20), "")
	require.Equal(t, "l:\n  - {a: 1, b: 20}     # first\n  - {a: 3}  # second\n", text(t, d))
}
