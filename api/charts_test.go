package api

import (
	"encoding/xml"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// chartXML parses a chart as XML (strictly) and returns its text and
// the attributes of its rects.
func chartXML(t *testing.T, svg string) (texts []string, rects []map[string]string) {
	t.Helper()
	return markupXML(t, svg, "svg")
}

// markupXML parses markup whose root element is root.
func markupXML(t *testing.T, svg, root string) (texts []string, rects []map[string]string) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(svg))
	d.Strict = true
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the chart is not well-formed XML: %v\n%s", err, svg)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			if depth == 0 && x.Name.Local != root {
				t.Fatalf("the chart starts with <%s>", x.Name.Local)
			}
			depth++
			if x.Name.Local == "rect" {
				m := map[string]string{}
				for _, a := range x.Attr {
					m[a.Name.Local] = a.Value
				}
				rects = append(rects, m)
			}
		case xml.EndElement:
			depth--
		case xml.CharData:
			if s := strings.TrimSpace(string(x)); s != "" {
				texts = append(texts, s)
			}
		}
	}
	if depth != 0 {
		t.Fatal("the chart's elements are not closed")
	}
	return texts, rects
}

// chartAccessible checks what every chart must have: role img, an
// aria-label, a <title>, and no number that is not one.
func chartAccessible(t *testing.T, svg, title string) {
	t.Helper()
	if !strings.HasPrefix(svg, `<svg class="chart"`) || !strings.Contains(svg, `role="img"`) || !strings.Contains(svg, `aria-label="`) ||
		!strings.Contains(svg, "<title>"+esc(title)+"</title>") {
		t.Fatalf("chart without role, label or title: %.300s", svg)
	}
	if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
		t.Fatalf("chart with a coordinate that is not a number: %s", svg)
	}
	if strings.Contains(svg, "style=") || strings.Contains(svg, "<script") {
		t.Fatalf("chart with an inline style or script: %s", svg)
	}
}

func TestChartEscapesLabels(t *testing.T) {
	hostile := []string{`<script>alert("x")</script>`, `a & b`, `it's "quoted"`, `]]><foo>`, `{{.CSRF}}`}
	c := stackedChart{Title: `Events <by> "kind"`, Summary: `& more`, Unit: `<u>`, Categories: []string{hostile[0], hostile[1]},
		Series: []chartSeries{{Name: hostile[2], Values: []int64{1, 2}}, {Name: hostile[3], Values: []int64{3, 0}}}}
	svg := string(c.SVG())
	chartAccessible(t, svg, c.Title)
	texts, rects := chartXML(t, svg)
	if strings.Contains(svg, "<script") || strings.Contains(svg, "<foo>") || strings.Contains(svg, "<u>") {
		t.Fatalf("a label is not escaped: %s", svg)
	}
	joined := strings.Join(texts, "\n")
	for _, want := range []string{hostile[0], hostile[1], `Events <by> "kind"`} {
		if !strings.Contains(joined, want) {
			t.Fatalf("the chart's text lacks %q: %q", want, texts)
		}
	}
	if len(rects) != 3 {
		t.Fatalf("%d rects, want 3 (zero values draw nothing)", len(rects))
	}
	if rects[0]["data-series"] != hostile[2] || rects[0]["data-category"] != hostile[0] || rects[2]["data-series"] != hostile[2] {
		t.Fatalf("rect attributes: %v", rects)
	}
	legend := string(c.Legend())
	if strings.Contains(legend, "<script") || !strings.Contains(legend, esc(hostile[3])) {
		t.Fatalf("legend: %s", legend)
	}
	markupXML(t, legend, "ul")

	b := barChart{Title: "Reads", Bars: []chartBar{{Label: hostile[0], Value: 3}, {Label: hostile[4], Value: 1, Text: `<i>one</i>`}}, Unit: "reads"}
	svg = string(b.SVG())
	chartAccessible(t, svg, "Reads")
	texts, rects = chartXML(t, svg)
	if strings.Contains(svg, "<script") || strings.Contains(svg, "<i>") {
		t.Fatalf("a bar's label is not escaped: %s", svg)
	}
	if rects[0]["data-label"] != hostile[0] || rects[1]["data-label"] != hostile[4] || !strings.Contains(strings.Join(texts, "\n"), "<i>one</i>") {
		t.Fatalf("bars: %v %q", rects, texts)
	}
}

func TestChartEmpty(t *testing.T) {
	for name, c := range map[string]stackedChart{
		"no categories": {Title: "Events", Empty: "No events in this period."},
		"all zero":      {Title: "Events", Empty: "No events in this period.", Categories: []string{"01-01", "01-02"}, Series: []chartSeries{{Name: "a", Values: []int64{0, 0}}}},
		"short series":  {Title: "Events", Empty: "No events in this period.", Categories: []string{"01-01", "01-02"}, Series: []chartSeries{{Name: "a"}}},
	} {
		svg := string(c.SVG())
		chartAccessible(t, svg, "Events")
		texts, rects := chartXML(t, svg)
		if len(rects) != 0 || !strings.Contains(strings.Join(texts, "\n"), "No events in this period.") {
			t.Fatalf("%s: %d rects, texts %q", name, len(rects), texts)
		}
	}
	b := barChart{Title: "Reads", Empty: "Nobody read anything."}
	svg := string(b.SVG())
	chartAccessible(t, svg, "Reads")
	texts, rects := chartXML(t, svg)
	if len(rects) != 0 || !strings.Contains(strings.Join(texts, "\n"), "Nobody read anything.") {
		t.Fatalf("empty bars: %d rects, texts %q", len(rects), texts)
	}
	// Bars of zero, and progress of nothing.
	b = barChart{Title: "Keys", Bars: []chartBar{{Label: "a", Value: 0}, {Label: "b", Value: 0, Of: 1, Text: "no values"}}}
	svg = string(b.SVG())
	chartAccessible(t, svg, "Keys")
	chartXML(t, svg)
}

func TestChartScales(t *testing.T) {
	for _, c := range []struct{ peak, top, step int64 }{
		{-3, 1, 1}, {0, 1, 1}, {1, 1, 1}, {3, 3, 1}, {5, 5, 1}, {7, 8, 2}, {10, 10, 2}, {11, 15, 5},
		{100, 100, 20}, {101, 150, 50}, {1234, 1500, 500}, {1_000_000, 1_000_000, 200_000},
	} {
		top, step := niceScale(c.peak)
		if top != c.top || step != c.step {
			t.Errorf("niceScale(%d) = %d, %d; want %d, %d", c.peak, top, step, c.top, c.step)
		}
		if top < c.peak || top/step > 5 || top%step != 0 {
			t.Errorf("niceScale(%d) = %d, %d: not a scale of at most five steps that holds the peak", c.peak, top, step)
		}
	}

	// Column heights are proportional to the values, on the scale.
	c := stackedChart{Title: "Events", Categories: []string{"a", "b", "c"},
		Series: []chartSeries{{Name: "x", Values: []int64{2, 4, 0}}, {Name: "y", Values: []int64{1, 3, 1}}}}
	svg := string(c.SVG())
	_, rects := chartXML(t, svg)
	top, _ := niceScale(7) // the tallest column: 4 + 3
	plot := float64(stackedHeight - 40 - chartTop)
	for _, r := range rects {
		v, _ := strconv.ParseFloat(r["data-value"], 64)
		h, _ := strconv.ParseFloat(r["height"], 64)
		if want := plot * v / float64(top); math.Abs(h-want) > 0.11 {
			t.Fatalf("rect %v: height %v, want %v", r, h, want)
		}
	}
	// A column's segments stack: each starts where the one below ends.
	if y0, _ := strconv.ParseFloat(rects[0]["y"], 64); math.Abs(y0-(float64(stackedHeight-40)-plot*2/8)) > 0.11 {
		t.Fatalf("first segment at y %v", y0)
	}
	// The y axis is labelled with the scale's values.
	for _, v := range []string{">0<", ">2<", ">4<", ">6<", ">8<"} {
		if !strings.Contains(svg, v) {
			t.Fatalf("the axis lacks %s: %s", v, svg)
		}
	}

	// Bars share a scale; a progress bar is a share of its own total.
	b := barChart{Title: "Reads", Bars: []chartBar{{Label: "a", Value: 10}, {Label: "b", Value: 5}, {Label: "c", Value: 3, Of: 4}}}
	_, rects = chartXML(t, string(b.SVG()))
	full := float64(chartWidth - barValues - barLabels)
	widths := map[string]float64{}
	for _, r := range rects {
		if r["data-label"] != "" {
			widths[r["data-label"]], _ = strconv.ParseFloat(r["width"], 64)
		}
	}
	if widths["a"] != full || widths["b"] != full/2 || widths["c"] != full*3/4 {
		t.Fatalf("bar widths %v (full %v)", widths, full)
	}

	// Many categories: the labels thin out, the last one always shown.
	days := make([]string, 30)
	vals := make([]int64, 30)
	for i := range days {
		days[i] = "d" + strconv.Itoa(i)
		vals[i] = 1
	}
	svg = string(stackedChart{Title: "Events", Categories: days, Series: []chartSeries{{Name: "x", Values: vals}}}.SVG())
	labels := regexp.MustCompile(`text-anchor="middle">(d\d+)<`).FindAllStringSubmatch(svg, -1)
	if len(labels) < 10 || len(labels) > 20 || labels[len(labels)-1][1] != "d29" {
		t.Fatalf("%d day labels, the last %v", len(labels), labels[len(labels)-1])
	}
}

// TestChartContrast: each series' colour stands out from the white page
// by at least 4.5:1 (WCAG's relative luminance).
func TestChartContrast(t *testing.T) {
	lum := func(hex string) float64 {
		var c [3]float64
		for i := range 3 {
			v, _ := strconv.ParseUint(hex[1+2*i:3+2*i], 16, 8)
			s := float64(v) / 255
			if s <= 0.03928 {
				c[i] = s / 12.92
			} else {
				c[i] = math.Pow((s+0.055)/1.055, 2.4)
			}
		}
		return 0.2126*c[0] + 0.7152*c[1] + 0.0722*c[2]
	}
	for i, c := range chartPalette {
		if ratio := 1.05 / (lum(c) + 0.05); ratio < 4.5 {
			t.Errorf("series %d (%s): contrast %.2f against white", i, c, ratio)
		}
	}
	if chartColor(len(chartPalette)) != chartPalette[0] || chartColor(-1) != chartPalette[len(chartPalette)-1] {
		t.Fatal("chartColor does not wrap")
	}
}
