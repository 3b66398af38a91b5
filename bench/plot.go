package bench

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// plotColors are one per target, in report order.
var plotColors = []string{"#888888", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02"}

// SVG plots each target's sweep: p99 (solid) and p50 (dashed) latency against the
// offered rate, both axes logarithmic, with the p99 bound as a horizontal line.
func (r *Report) SVG() string {
	const (
		w, h                     = 860, 520
		left, right, top, bottom = 70, 190, 40, 60
	)
	pw, ph := float64(w-left-right), float64(h-top-bottom)

	type series struct {
		name     string
		color    string
		rate     []float64
		p50, p99 []float64
	}
	var all []series
	minX, maxX, minY, maxY := math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for i, t := range r.Targets {
		s := r.sweep(t.Name)
		if s == nil || len(s.Steps) == 0 {
			continue
		}
		se := series{name: t.Name, color: plotColors[i%len(plotColors)]}
		for _, st := range s.Steps {
			se.rate = append(se.rate, st.OfferedRate)
			se.p50 = append(se.p50, max(st.Latency.P50, 0.001))
			se.p99 = append(se.p99, max(st.Latency.P99, 0.001))
			minX, maxX = min(minX, st.OfferedRate), max(maxX, st.OfferedRate)
			minY, maxY = min(minY, se.p50[len(se.p50)-1]), max(maxY, se.p99[len(se.p99)-1])
		}
		all = append(all, se)
	}
	bound := ms(r.Config.P99Bound)
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", w, h, w, h)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", w, h)
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="15">Capstan bench (%s): latency against offered rate, %s workload</text>`+"\n",
		left, html.EscapeString(r.Suite), html.EscapeString(r.Config.SweepWorkload.Name))
	if len(all) == 0 {
		fmt.Fprintf(&b, `<text x="%d" y="%d">no sweep results</text></svg>`+"\n", left, top+40)
		return b.String()
	}
	if bound > 0 {
		maxY = max(maxY, bound)
	}
	// Decade-aligned log axes.
	x0, x1 := math.Floor(math.Log10(minX)), math.Ceil(math.Log10(maxX))
	y0, y1 := math.Floor(math.Log10(minY)), math.Ceil(math.Log10(maxY))
	if x1 == x0 {
		x1++
	}
	if y1 == y0 {
		y1++
	}
	px := func(v float64) float64 { return float64(left) + (math.Log10(v)-x0)/(x1-x0)*pw }
	py := func(v float64) float64 { return float64(top) + ph - (math.Log10(v)-y0)/(y1-y0)*ph }

	// Grid and tick labels at 1, 2 and 5 of each decade.
	for d := x0; d <= x1; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > x1+1e-9 {
				break
			}
			x := px(v)
			fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", x, top, x, float64(top)+ph)
			fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle">%s</text>`+"\n", x, float64(top)+ph+16, kfmt(v))
		}
	}
	for d := y0; d <= y1; d++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, d)
			if math.Log10(v) > y1+1e-9 {
				break
			}
			y := py(v)
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#eee"/>`+"\n", left, y, float64(left)+pw, y)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", left-6, y+4, fmtMS(v))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%.0f" height="%.0f" fill="none" stroke="#333"/>`+"\n", left, top, pw, ph)
	fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">offered rate (requests/s, log)</text>`+"\n", float64(left)+pw/2, h-18)
	fmt.Fprintf(&b, `<text transform="translate(18 %.1f) rotate(-90)" text-anchor="middle">latency (log)</text>`+"\n", float64(top)+ph/2)
	if bound > 0 {
		y := py(bound)
		fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#c00" stroke-dasharray="2 3"/>`+"\n", left, y, float64(left)+pw, y)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#c00" text-anchor="end">p99 bound %s</text>`+"\n", float64(left)+pw-4, y-4, fmtMS(bound))
	}
	line := func(s series, ys []float64, dash string) {
		var pts []string
		for i := range s.rate {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(s.rate[i]), py(ys[i])))
		}
		fmt.Fprintf(&b, `<polyline points="%s" fill="none" stroke="%s" stroke-width="2"%s/>`+"\n", strings.Join(pts, " "), s.color, dash)
		for i := range s.rate {
			fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>`+"\n", px(s.rate[i]), py(ys[i]), s.color)
		}
	}
	for i, s := range all {
		line(s, s.p99, "")
		line(s, s.p50, ` stroke-dasharray="5 4"`)
		ly := top + 10 + i*20
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>`+"\n", w-right+15, ly, w-right+40, ly, s.color)
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", w-right+46, ly+4, html.EscapeString(s.name))
	}
	ly := top + 20 + len(all)*20
	fmt.Fprintf(&b, `<text x="%d" y="%d" fill="#555">solid p99, dashed p50</text>`+"\n", w-right+15, ly)
	b.WriteString("</svg>\n")
	return b.String()
}
