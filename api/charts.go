package api

import (
	"fmt"
	"html"
	"html/template"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Charts drawn on the server as inline SVG for the dashboard: no script,
// no outside resource, nothing that the page's CSP forbids (colours are
// presentation attributes, not style attributes). Each chart is an
// <svg role="img"> with a <title> and an aria-label that says what it
// shows; every bar carries its numbers in a <title> (a tooltip) and in
// data-* attributes, and the page puts the same numbers in a table next
// to the chart, since a picture alone is not accessible. Every text that
// comes from data (names of actors, environments) is escaped.

// chartPalette are the series' colours, each at least 4.5:1 against the
// white page (and separated by a white stroke where they touch); the
// stylesheet lightens them on a dark page through the classes s0…s5.
var chartPalette = []string{"#0b5394", "#b45309", "#6d28d9", "#047857", "#be123c", "#4b5563"}

// chartColor is the colour of series i.
func chartColor(i int) string {
	return chartPalette[((i%len(chartPalette))+len(chartPalette))%len(chartPalette)]
}

// chartSeries is one series of a stacked chart: a value per category.
type chartSeries struct {
	Name   string
	Values []int64
}

// stackedChart is a column chart of categories (days), each column
// stacked by series (kinds of events).
type stackedChart struct {
	// Title names the chart (its <title>); Summary says what it shows
	// in words (with Title, the aria-label).
	Title, Summary string
	Categories     []string
	Series         []chartSeries
	// Unit names what is counted ("events").
	Unit string
	// Empty is said when there is nothing to draw.
	Empty string
}

// Geometry of the charts, in the viewBox's units.
const (
	chartWidth    = 720
	stackedHeight = 260
	chartTop      = 12
	axisLabels    = 48 // room for the y axis' labels
	barRow        = 28 // a horizontal bar's row
	barLabels     = 190
	barValues     = 110
)

// Total is the sum of the values of category i.
func (c stackedChart) total(i int) int64 {
	var t int64
	for _, s := range c.Series {
		if i < len(s.Values) && s.Values[i] > 0 {
			t += s.Values[i]
		}
	}
	return t
}

// SVG draws the chart.
func (c stackedChart) SVG() template.HTML {
	var b strings.Builder
	plotLeft, plotRight := float64(axisLabels), float64(chartWidth-8)
	plotTop, plotBottom := float64(chartTop), float64(stackedHeight-40)
	var peak int64
	for i := range c.Categories {
		peak = max(peak, c.total(i))
	}
	svgOpen(&b, chartWidth, stackedHeight, c.Title, c.Summary)
	top, step := niceScale(peak)
	// The y axis: gridlines and their values.
	for v := int64(0); v <= top; v += step {
		y := plotBottom - (plotBottom-plotTop)*float64(v)/float64(top)
		fmt.Fprintf(&b, `<line class="axis" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#cfd6e0"/>`, num(plotLeft), num(y), num(plotRight), num(y))
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="end" dominant-baseline="middle">%d</text>`, num(plotLeft-6), num(y), v)
	}
	n := len(c.Categories)
	if n == 0 || peak == 0 {
		empty := c.Empty
		if empty == "" {
			empty = "Nothing to show for this period."
		}
		fmt.Fprintf(&b, `<text class="empty" x="%s" y="%s" text-anchor="middle">%s</text>`, num((plotLeft+plotRight)/2), num((plotTop+plotBottom)/2), esc(empty))
	}
	if n > 0 {
		slot := (plotRight - plotLeft) / float64(n)
		width := math.Max(slot*0.72, 1)
		// Label every k-th category, counting back from the last one,
		// so that labels (about 40 units each) do not overlap.
		every := max(1, int(math.Ceil(40/slot)))
		for i, cat := range c.Categories {
			x := plotLeft + slot*float64(i) + (slot-width)/2
			y := plotBottom
			for si, s := range c.Series {
				if i >= len(s.Values) || s.Values[i] <= 0 {
					continue
				}
				h := (plotBottom - plotTop) * float64(s.Values[i]) / float64(top)
				y -= h
				fmt.Fprintf(&b, `<rect class="s%d seg" x="%s" y="%s" width="%s" height="%s" fill="%s" stroke="#ffffff" stroke-width="1" data-series="%s" data-category="%s" data-value="%d"><title>%s · %s: %d %s</title></rect>`,
					si%len(chartPalette), num(x), num(y), num(width), num(h), chartColor(si), esc(s.Name), esc(cat), s.Values[i],
					esc(cat), esc(s.Name), s.Values[i], esc(c.Unit))
			}
			if (n-1-i)%every == 0 {
				fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle">%s</text>`, num(x+width/2), num(plotBottom+16), esc(cat))
			}
		}
	}
	fmt.Fprintf(&b, `<line class="axis" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#6b778a"/>`, num(plotLeft), num(plotBottom), num(plotRight), num(plotBottom))
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// Legend lists the series with their colours, as HTML next to the chart
// (names, so that colour is not the only thing that tells them apart).
func (c stackedChart) Legend() template.HTML {
	var b strings.Builder
	b.WriteString(`<ul class="legend">`)
	for i, s := range c.Series {
		fmt.Fprintf(&b, `<li><svg class="swatch" width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" focusable="false"><rect class="s%d" width="12" height="12" rx="2" fill="%s"/></svg> %s</li>`,
			i%len(chartPalette), chartColor(i), esc(s.Name))
	}
	b.WriteString(`</ul>`)
	return template.HTML(b.String())
}

// chartBar is one bar of a bar chart.
type chartBar struct {
	Label string
	Value int64
	// Of, when above 0, makes the bar a share of Of (a progress bar,
	// drawn over a track); otherwise bars share one scale.
	Of int64
	// Text, when set, is written after the bar instead of the value.
	Text string
	// Series picks the colour.
	Series int
}

// barChart is a horizontal bar chart: one labelled row per bar.
type barChart struct {
	Title, Summary string
	Bars           []chartBar
	// Unit names what is counted, in the plural ("reads"), and UnitOne
	// in the singular ("read"; Unit when empty).
	Unit, UnitOne string
	Empty         string
}

// unit names what is counted for n of it.
func (c barChart) unit(n int64) string {
	if n == 1 && c.UnitOne != "" {
		return c.UnitOne
	}
	return c.Unit
}

// SVG draws the chart.
func (c barChart) SVG() template.HTML {
	var b strings.Builder
	n := len(c.Bars)
	height := chartTop + max(n, 1)*barRow + 24
	plotLeft, plotRight := float64(barLabels), float64(chartWidth-barValues)
	plotBottom := float64(chartTop + max(n, 1)*barRow)
	svgOpen(&b, chartWidth, height, c.Title, c.Summary)
	var peak int64
	for _, bar := range c.Bars {
		if bar.Of <= 0 {
			peak = max(peak, bar.Value)
		}
	}
	top, step := niceScale(peak)
	if n == 0 {
		empty := c.Empty
		if empty == "" {
			empty = "Nothing to show."
		}
		fmt.Fprintf(&b, `<text class="empty" x="%s" y="%s" text-anchor="middle" dominant-baseline="middle">%s</text>`,
			num(float64(chartWidth)/2), num(float64(chartTop)+barRow/2), esc(empty))
	}
	scaled := false
	for i, bar := range c.Bars {
		y := float64(chartTop + i*barRow)
		mid := y + barRow/2
		fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="end" dominant-baseline="middle">%s<title>%s</title></text>`,
			num(plotLeft-8), num(mid), esc(clip(bar.Label, 28)), esc(bar.Label))
		full := plotRight - plotLeft
		var w float64
		text := bar.Text
		if bar.Of > 0 {
			fmt.Fprintf(&b, `<rect class="track" x="%s" y="%s" width="%s" height="%s" fill="#ffffff" stroke="#6b778a"/>`,
				num(plotLeft), num(y+5), num(full), num(barRow-10))
			w = full * float64(min(max(bar.Value, 0), bar.Of)) / float64(bar.Of)
			if text == "" {
				text = fmt.Sprintf("%d of %d", bar.Value, bar.Of)
			}
		} else {
			scaled = true
			w = full * float64(max(bar.Value, 0)) / float64(top)
			if text == "" {
				text = strconv.FormatInt(bar.Value, 10)
				if u := c.unit(bar.Value); u != "" {
					text += " " + u
				}
			}
		}
		of := ""
		if bar.Of > 0 {
			of = fmt.Sprintf(` data-of="%d"`, bar.Of)
		}
		fmt.Fprintf(&b, `<rect class="s%d bar" x="%s" y="%s" width="%s" height="%s" fill="%s" data-label="%s" data-value="%d"%s><title>%s: %s</title></rect>`,
			bar.Series%len(chartPalette), num(plotLeft), num(y+5), num(w), num(barRow-10), chartColor(bar.Series), esc(bar.Label), bar.Value, of,
			esc(bar.Label), esc(text))
		fmt.Fprintf(&b, `<text x="%s" y="%s" dominant-baseline="middle">%s</text>`, num(plotLeft+math.Max(w, 0)+6), num(mid), esc(clip(text, 18)))
	}
	if scaled {
		// The scale under the bars.
		for v := int64(0); v <= top; v += step {
			x := plotLeft + (plotRight-plotLeft)*float64(v)/float64(top)
			fmt.Fprintf(&b, `<line class="axis" x1="%s" y1="%s" x2="%s" y2="%s" stroke="#cfd6e0"/>`, num(x), num(float64(chartTop)), num(x), num(plotBottom))
			fmt.Fprintf(&b, `<text x="%s" y="%s" text-anchor="middle">%d</text>`, num(x), num(plotBottom+16), v)
		}
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// svgOpen writes the opening of a chart: its box, role, label and title.
func svgOpen(b *strings.Builder, width, height int, title, summary string) {
	label := title
	if summary != "" {
		label += ". " + summary
	}
	fmt.Fprintf(b, `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" role="img" aria-label="%s"><title>%s</title>`,
		width, height, esc(label), esc(title))
	if summary != "" {
		fmt.Fprintf(b, `<desc>%s</desc>`, esc(summary))
	}
}

// niceScale returns the top of a scale that holds peak and the step of
// its gridlines: 1, 2 or 5 times a power of ten, at most five steps.
func niceScale(peak int64) (top, step int64) {
	if peak <= 0 {
		return 1, 1
	}
	raw := float64(peak) / 5
	exp := math.Pow(10, math.Floor(math.Log10(raw)))
	f := raw / exp
	var nice float64
	switch {
	case f <= 1:
		nice = 1
	case f <= 2:
		nice = 2
	case f <= 5:
		nice = 5
	default:
		nice = 10
	}
	step = max(int64(nice*exp), 1)
	top = (peak + step - 1) / step * step
	return top, step
}

// esc escapes text for SVG inside HTML (and as XML).
func esc(s string) string { return html.EscapeString(s) }

// clip shortens s to at most n characters, with an ellipsis.
func clip(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

// num formats a coordinate with at most one decimal.
func num(f float64) string {
	return strconv.FormatFloat(math.Round(f*10)/10, 'f', -1, 64)
}
