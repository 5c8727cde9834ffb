package hostlist

import (
	"slices"
	"strconv"
	"strings"
)

// Collapse writes names as a short hostlist, the inverse of Expand: names
// that differ only in one run of digits share a bracket group
// ("client01,client02,client04" is "client[01-02,04]"). Of the runs to
// group by, the one giving the shortest text wins. The result is checked
// by expanding it; should it not give back the names in their order, they
// are listed one by one.
func Collapse(names []string) string {
	best := strings.Join(names, ",")
	runs := 0
	for _, n := range names {
		runs = max(runs, len(digitRuns(n)))
	}
	for r := 0; r < runs; r++ {
		if s := collapseOn(names, r); len(s) < len(best) {
			best = s
		}
	}
	if got, err := Expand(best); err != nil || !slices.Equal(got, names) {
		return strings.Join(names, ",")
	}
	return best
}

// digitRuns returns the [start, end) of each run of digits in s.
func digitRuns(s string) [][2]int {
	var runs [][2]int
	for i := 0; i < len(s); {
		if s[i] < '0' || s[i] > '9' {
			i++
			continue
		}
		j := i
		for j < len(s) && s[j] >= '0' && s[j] <= '9' {
			j++
		}
		runs = append(runs, [2]int{i, j})
		i = j
	}
	return runs
}

// collapseOn groups names by everything but their r-th run of digits
// counted from the end, keeping the order in which groups first appear.
func collapseOn(names []string, r int) string {
	type group struct {
		pre, post string
		nums      []string
	}
	var groups []*group
	byKey := map[[2]string]*group{}
	for _, n := range names {
		runs := digitRuns(n)
		if r >= len(runs) {
			groups = append(groups, &group{pre: n})
			continue
		}
		run := runs[len(runs)-1-r]
		k := [2]string{n[:run[0]], n[run[1]:]}
		g, ok := byKey[k]
		// Only consecutive names join a group: the expansion must give
		// them back in the same order.
		if !ok || g != groups[len(groups)-1] {
			g = &group{pre: k[0], post: k[1]}
			byKey[k] = g
			groups = append(groups, g)
		}
		g.nums = append(g.nums, n[run[0]:run[1]])
	}
	parts := make([]string, len(groups))
	for i, g := range groups {
		if len(g.nums) <= 1 {
			parts[i] = g.pre + strings.Join(g.nums, "") + g.post
			continue
		}
		parts[i] = g.pre + "[" + ranges(g.nums) + "]" + g.post
	}
	return strings.Join(parts, ",")
}

// ranges writes numbers as bracket group elements: "01-03,07". A run is
// numbers counting up by one in the width of its first, as Expand pads
// them.
func ranges(nums []string) string {
	var elems []string
	for i := 0; i < len(nums); {
		lo := nums[i]
		v, _ := strconv.ParseUint(lo, 10, 64)
		j := i + 1
		for j < len(nums) && nums[j] == pad(strconv.FormatUint(v+uint64(j-i), 10), len(lo)) {
			j++
		}
		if j-i == 1 {
			elems = append(elems, lo)
		} else {
			elems = append(elems, lo+"-"+nums[j-1])
		}
		i = j
	}
	return strings.Join(elems, ",")
}
