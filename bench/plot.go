package bench

import (
	"bytes"
	"cmp"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Layout of WriteSVG, in SVG user units (px). Two panels side by side,
// GET then PUT, sharing both scales so that they compare at a glance.
const (
	svgPlotW     = 400 // plot area of one panel
	svgPlotH     = 300
	svgLeft      = 70  // left edge of the first plot area, room for y labels
	svgGap       = 90  // between the panels, room for the second's y labels
	svgRight     = 30  // right margin
	svgTop       = 90  // top of the plot areas, below title and panel titles
	svgLegendTop = 60  // legend's first row, below the plot areas
	svgLegendCol = 235 // width of one legend column
	svgLegendRow = 18
	svgWidth     = svgLeft + 2*svgPlotW + svgGap + svgRight
)

// svgPalette is colour-blind safe (Okabe-Ito, black left out for the
// axes); a colour is one (object size, instances) pair, shared by ober
// and haproxy so the two lines of a comparison match. A string so that
// nothing can change it.
const svgPalette = "#0072b2 #e69f00 #009e73 #d55e00 #cc79a7 #56b4e9 #f0e442 #999999"

// seriesKey is one line of the plot.
type seriesKey struct {
	target      string
	objectBytes int
	instances   int
}

func targetOrder(t string) int {
	switch t {
	case TargetOber:
		return 0
	case TargetHAProxy:
		return 1
	}
	return 2
}

func compareSeries(a, b seriesKey) int {
	return cmp.Or(cmp.Compare(targetOrder(a.target), targetOrder(b.target)), cmp.Compare(a.target, b.target),
		cmp.Compare(a.objectBytes, b.objectBytes), cmp.Compare(a.instances, b.instances))
}

func (k seriesKey) label() string {
	unit := "instances"
	if k.target != TargetOber {
		unit = "threads"
	}
	if k.instances == 1 {
		unit = unit[:len(unit)-1]
	}
	return fmt.Sprintf("%s, %s, %d %s", k.target, sizeLabel(k.objectBytes), k.instances, unit)
}

// svgScale maps data to the plot area of one panel.
type svgScale struct {
	x0, y0           float64 // plot area's top-left corner
	log2Lo, log2Hi   float64 // x domain, in log2(conns)
	yMax             float64 // y domain is [0, yMax] GB/s
	xTicks           []int   // exponents of 2
	yTicks           []float64
	ceiling          float64 // crypto ceiling, 0 when off scale or unknown
	ceilingOffScale  bool
	ceilingGBps      float64
	connsLo, connsHi int
}

func (s *svgScale) x(conns int) float64 {
	f := (math.Log2(float64(conns)) - s.log2Lo) / (s.log2Hi - s.log2Lo)
	return s.x0 + f*svgPlotW
}

func (s *svgScale) y(gbps float64) float64 {
	gbps = min(max(gbps, 0), s.yMax)
	return s.y0 + svgPlotH - gbps/s.yMax*svgPlotH
}

// newScale fits the scales to the throughput points and the ceiling.
func newScale(r *Report) svgScale {
	var s svgScale
	dataMax := 0.0
	for _, t := range r.Throughput {
		if t.Conns <= 0 {
			continue
		}
		if s.connsLo == 0 || t.Conns < s.connsLo {
			s.connsLo = t.Conns
		}
		s.connsHi = max(s.connsHi, t.Conns)
		if !math.IsInf(t.GBps, 0) && !math.IsNaN(t.GBps) {
			dataMax = max(dataMax, t.GBps)
		}
	}
	lo, hi := 0, 6 // an empty plot still shows the usual sweep's axis
	if s.connsLo > 0 {
		lo = int(math.Floor(math.Log2(float64(s.connsLo))))
		hi = int(math.Ceil(math.Log2(float64(s.connsHi))))
	}
	if hi == lo {
		hi++
	}
	for e := lo; e <= hi; e++ {
		s.xTicks = append(s.xTicks, e)
	}
	// A little room either side keeps the end markers off the axes.
	s.log2Lo, s.log2Hi = float64(lo)-0.2, float64(hi)+0.2

	// The ceiling is drawn when it is within twice the data: further up,
	// it would squash the lines the plot is for, so the title notes it.
	s.ceilingGBps = r.Crypto.GBpsMachine
	top := dataMax
	if c := s.ceilingGBps; c > 0 && !math.IsInf(c, 0) && (top == 0 || c <= 2*top) {
		top = max(top, c)
	}
	if !(top > 0) {
		top = 1
	}
	step := niceStep(top / 5)
	s.yMax = step * math.Ceil(top/step)
	if s.yMax < top*1.02 { // headroom, so the top line is not on the frame
		s.yMax += step
	}
	for i := 0; float64(i)*step <= s.yMax*(1+1e-9); i++ {
		s.yTicks = append(s.yTicks, math.Round(float64(i)*step*1e6)/1e6)
	}
	if c := s.ceilingGBps; c > 0 {
		if c <= s.yMax {
			s.ceiling = c
		} else {
			s.ceilingOffScale = true
		}
	}
	return s
}

// niceStep rounds v up to 1, 2 or 5 times a power of ten.
func niceStep(v float64) float64 {
	p := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if v <= m*p*(1+1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// f1 formats a coordinate; one decimal keeps the output short and
// identical from run to run.
func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// svgText writes a text element, its content escaped.
func svgText(b *bytes.Buffer, x, y float64, attrs, s string) {
	fmt.Fprintf(b, `<text x="%s" y="%s"%s>`, f1(x), f1(y), attrs)
	_ = xml.EscapeText(b, []byte(s)) // a bytes.Buffer does not fail
	b.WriteString("</text>\n")
}

// svgMarker draws a point: ober filled circles, haproxy hollow squares,
// so the targets differ in black and white too.
func svgMarker(b *bytes.Buffer, target string, x, y float64, colour string) {
	if target == TargetOber {
		fmt.Fprintf(b, `<circle cx="%s" cy="%s" r="3.5" fill="%s"/>`+"\n", f1(x), f1(y), colour)
		return
	}
	fmt.Fprintf(b, `<rect x="%s" y="%s" width="7" height="7" fill="white" stroke="%s" stroke-width="1.5"/>`+"\n",
		f1(x-3.5), f1(y-3.5), colour)
}

func dashOf(target string) string {
	if target == TargetOber {
		return ""
	}
	return ` stroke-dasharray="6 4"`
}

// WriteSVG writes a self-contained SVG plot of the throughput sweep: one
// panel per op, GB/s against connections on a log2 axis, one line per
// (target, object size, instances), ober solid and haproxy dashed, with
// the machine's crypto ceiling dotted. The same report gives the same
// bytes, so plots can be diffed and checked in.
func WriteSVG(w io.Writer, r *Report) error {
	s := newScale(r)

	// Series, and the colour of each (object size, instances) pair.
	type point struct {
		conns int
		gbps  float64
	}
	series := make(map[string]map[seriesKey][]point) // by op
	var keys []seriesKey
	type colourKey struct{ objectBytes, instances int }
	var colourKeys []colourKey
	for _, t := range r.Throughput {
		if t.Conns <= 0 {
			continue
		}
		k := seriesKey{t.Target, t.ObjectBytes, t.Instances}
		if !slices.Contains(keys, k) {
			keys = append(keys, k)
		}
		if ck := (colourKey{t.ObjectBytes, t.Instances}); !slices.Contains(colourKeys, ck) {
			colourKeys = append(colourKeys, ck)
		}
		if series[t.Op] == nil {
			series[t.Op] = make(map[seriesKey][]point)
		}
		series[t.Op][k] = append(series[t.Op][k], point{t.Conns, t.GBps})
	}
	slices.SortFunc(keys, compareSeries)
	slices.SortFunc(colourKeys, func(a, b colourKey) int {
		return cmp.Or(cmp.Compare(a.objectBytes, b.objectBytes), cmp.Compare(a.instances, b.instances))
	})
	palette := strings.Fields(svgPalette)
	colour := func(k seriesKey) string {
		return palette[slices.Index(colourKeys, colourKey{k.objectBytes, k.instances})%len(palette)]
	}

	entries := len(keys)
	if s.ceiling > 0 {
		entries++
	}
	cols := (svgWidth - 2*20) / svgLegendCol
	rows := (entries + cols - 1) / cols
	legendY := svgTop + svgPlotH + svgLegendTop
	height := legendY + rows*svgLegendRow + 10

	title := fmt.Sprintf("ober bench: HTTPS throughput on %s, %d CPUs", orDash(r.Machine.CPUModel), r.Machine.Cores)
	if s.ceilingOffScale {
		title += fmt.Sprintf(" (crypto ceiling %.2f GB/s, off scale)", s.ceilingGBps)
	}
	sub := "GB/s (10^9 B/s) by concurrent connections; solid: ober, dashed: haproxy"
	if r.Settings.AA && r.Settings.VariantTune != "" {
		sub = strings.Replace(sub, "solid: ober", "solid: haproxy with "+r.Settings.VariantTune, 1)
	} else if r.Settings.AA {
		sub = strings.Replace(sub, "solid: ober", "solid: haproxy again (A/A)", 1)
	} else if !r.Settings.Steering {
		sub = strings.Replace(sub, "solid: ober", "solid: ober (no cpumap hop)", 1)
	}
	if s.ceiling > 0 {
		sub += fmt.Sprintf("; dotted: %s ceiling, %.2f GB/s per core x %d", orDash(r.Crypto.Cipher), r.Crypto.GBpsPerCore, r.Machine.Cores)
	}
	if r.Version != "" {
		sub += "; ober " + r.Version
	}

	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n",
		svgWidth, height, svgWidth, height)
	b.WriteString("<title>")
	_ = xml.EscapeText(&b, []byte(title))
	b.WriteString("</title>\n")
	fmt.Fprintf(&b, `<rect x="0" y="0" width="%d" height="%d" fill="white"/>`+"\n", svgWidth, height)
	svgText(&b, svgWidth/2, 24, ` text-anchor="middle" font-size="16" font-weight="bold"`, title)
	svgText(&b, svgWidth/2, 44, ` text-anchor="middle" fill="#444"`, sub)

	for i, op := range []string{"GET", "PUT"} {
		s.x0 = float64(svgLeft + i*(svgPlotW+svgGap))
		s.y0 = svgTop
		x1, y1 := s.x0+svgPlotW, s.y0+svgPlotH
		fmt.Fprintf(&b, `<g class="panel" id="panel-%s">`+"\n", op)
		svgText(&b, s.x0+svgPlotW/2, s.y0-12, ` text-anchor="middle" font-size="14" font-weight="bold"`, op)

		for _, v := range s.yTicks {
			y := s.y(v)
			fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e5e5e5"/>`+"\n", f1(s.x0), f1(y), f1(x1), f1(y))
			fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black"/>`+"\n", f1(s.x0-4), f1(y), f1(s.x0), f1(y))
			svgText(&b, s.x0-7, y+4, ` text-anchor="end"`, strconv.FormatFloat(v, 'f', -1, 64))
		}
		for _, e := range s.xTicks {
			x := s.x0 + (float64(e)-s.log2Lo)/(s.log2Hi-s.log2Lo)*svgPlotW
			fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e5e5e5"/>`+"\n", f1(x), f1(s.y0), f1(x), f1(y1))
			fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black"/>`+"\n", f1(x), f1(y1), f1(x), f1(y1+4))
			svgText(&b, x, y1+17, ` text-anchor="middle"`, strconv.FormatFloat(math.Exp2(float64(e)), 'f', -1, 64))
		}
		fmt.Fprintf(&b, `<rect x="%s" y="%s" width="%d" height="%d" fill="none" stroke="black"/>`+"\n",
			f1(s.x0), f1(s.y0), svgPlotW, svgPlotH)
		svgText(&b, s.x0+svgPlotW/2, y1+36, ` text-anchor="middle"`, "connections (log2 scale)")
		lx, ly := s.x0-48, s.y0+svgPlotH/2
		svgText(&b, lx, ly, fmt.Sprintf(` text-anchor="middle" transform="rotate(-90 %s %s)"`, f1(lx), f1(ly)), "GB/s")

		if s.ceiling > 0 {
			y := s.y(s.ceiling)
			fmt.Fprintf(&b, `<line class="ceiling" x1="%s" y1="%s" x2="%s" y2="%s" stroke="black" stroke-dasharray="1 3"/>`+"\n",
				f1(s.x0), f1(y), f1(x1), f1(y))
			svgText(&b, x1-4, y-4, ` text-anchor="end" font-size="11"`, fmt.Sprintf("crypto ceiling %.2f GB/s", s.ceiling))
		}

		drawn := 0
		for _, k := range keys {
			pts := series[op][k]
			if len(pts) == 0 {
				continue
			}
			drawn++
			slices.SortStableFunc(pts, func(a, b point) int { return cmp.Compare(a.conns, b.conns) })
			c := colour(k)
			b.WriteString(`<g class="series" data-target="`)
			_ = xml.EscapeText(&b, []byte(k.target))
			b.WriteString(`">` + "\n")
			if len(pts) > 1 {
				b.WriteString(`<polyline fill="none" stroke="` + c + `" stroke-width="2"` + dashOf(k.target) + ` points="`)
				for j, p := range pts {
					if j > 0 {
						b.WriteByte(' ')
					}
					b.WriteString(f1(s.x(p.conns)) + "," + f1(s.y(p.gbps)))
				}
				b.WriteString(`"/>` + "\n")
			}
			for _, p := range pts {
				svgMarker(&b, k.target, s.x(p.conns), s.y(p.gbps), c)
			}
			b.WriteString("</g>\n")
		}
		if drawn == 0 {
			svgText(&b, s.x0+svgPlotW/2, s.y0+svgPlotH/2, ` text-anchor="middle" fill="#888"`, "no data")
		}
		b.WriteString("</g>\n")
	}

	b.WriteString(`<g class="legend">` + "\n")
	for i := range entries {
		x := float64(20 + (i%cols)*svgLegendCol)
		y := float64(legendY + (i/cols)*svgLegendRow)
		if i == len(keys) { // the ceiling's entry, last
			fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="black" stroke-dasharray="1 3"/>`+"\n",
				f1(x), f1(y), f1(x+28), f1(y))
			svgText(&b, x+34, y+4, "", "crypto ceiling")
			continue
		}
		k := keys[i]
		c := colour(k)
		fmt.Fprintf(&b, `<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="2"%s/>`+"\n",
			f1(x), f1(y), f1(x+28), f1(y), c, dashOf(k.target))
		svgMarker(&b, k.target, x+14, y, c)
		svgText(&b, x+34, y+4, "", k.label())
	}
	b.WriteString("</g>\n</svg>\n")

	if _, err := w.Write(b.Bytes()); err != nil {
		return fmt.Errorf("svg: %w", err)
	}
	return nil
}
