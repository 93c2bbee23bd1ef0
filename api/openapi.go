package api

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"net/http"
	"slices"
	"sync"

	"go.yaml.in/yaml/v3"
)

// The OpenAPI description is kept in parts, one file per area of the API
// (openapi/*.yaml), and merged in name order. The first part holds the
// document's metadata and shared components; the others add paths, tags
// and components, and may not redefine what an earlier part defines.
//
//go:embed openapi/*.yaml
var openapiParts embed.FS

var openapiDoc = sync.OnceValues(func() ([]byte, error) { return MergeOpenAPI(openapiParts) })

// OpenAPI returns the merged OpenAPI 3.1 description of the API, as YAML.
func OpenAPI() ([]byte, error) { return openapiDoc() }

// MergeOpenAPI merges the YAML parts under openapi/ in fsys.
func MergeOpenAPI(fsys fs.FS) ([]byte, error) {
	names, err := fs.Glob(fsys, "openapi/*.yaml")
	if err != nil {
		return nil, err
	}
	slices.Sort(names)
	if len(names) == 0 {
		return nil, fmt.Errorf("openapi: no parts")
	}
	var root *yaml.Node
	for _, name := range names {
		b, err := fs.ReadFile(fsys, name)
		if err != nil {
			return nil, err
		}
		var doc yaml.Node
		if err := yaml.Unmarshal(b, &doc); err != nil {
			return nil, fmt.Errorf("openapi: %s: %w", name, err)
		}
		if len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
			return nil, fmt.Errorf("openapi: %s: not a mapping", name)
		}
		part := doc.Content[0]
		if root == nil {
			root = part
			continue
		}
		for i := 0; i < len(part.Content); i += 2 {
			key, val := part.Content[i].Value, part.Content[i+1]
			switch key {
			case "paths":
				if err := mergeMap(root, "paths", val, name); err != nil {
					return nil, err
				}
			case "components":
				for j := 0; j < len(val.Content); j += 2 {
					section := val.Content[j].Value
					comps := mapping(root, "components")
					if err := mergeMap(comps, section, val.Content[j+1], name); err != nil {
						return nil, err
					}
				}
			case "tags":
				tags := value(root, "tags")
				if tags == nil {
					root.Content = append(root.Content, scalar("tags"), &yaml.Node{Kind: yaml.SequenceNode})
					tags = value(root, "tags")
				}
				tags.Content = append(tags.Content, val.Content...)
			default:
				return nil, fmt.Errorf("openapi: %s: a part may only add paths, components and tags, not %q", name, key)
			}
		}
	}
	var buf bytes.Buffer
	buf.WriteString("# Generated from api/openapi/*.yaml by `go test ./api -run TestOpenAPIDocument -update`. Do not edit.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(root); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func scalar(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Value: s} }

// value returns the value of key in mapping m, or nil.
func value(m *yaml.Node, key string) *yaml.Node {
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i+1]
		}
	}
	return nil
}

// mapping returns the mapping under key in m, adding an empty one.
func mapping(m *yaml.Node, key string) *yaml.Node {
	if v := value(m, key); v != nil {
		return v
	}
	v := &yaml.Node{Kind: yaml.MappingNode}
	m.Content = append(m.Content, scalar(key), v)
	return v
}

// mergeMap adds the entries of add to the mapping under key in m,
// refusing duplicates.
func mergeMap(m *yaml.Node, key string, add *yaml.Node, part string) error {
	if add.Kind != yaml.MappingNode {
		return fmt.Errorf("openapi: %s: %s is not a mapping", part, key)
	}
	dst := mapping(m, key)
	for i := 0; i < len(add.Content); i += 2 {
		k := add.Content[i].Value
		if value(dst, k) != nil {
			return fmt.Errorf("openapi: %s: %s %q is defined twice", part, key, k)
		}
		dst.Content = append(dst.Content, add.Content[i], add.Content[i+1])
	}
	return nil
}

func serveOpenAPI(w http.ResponseWriter, r *http.Request) {
	b, err := OpenAPI()
	if err != nil {
		writeProblem(w, r, http.StatusInternalServerError, "internal", "Internal error", "the API description could not be built")
		return
	}
	w.Header().Set("Content-Type", "application/yaml")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Write(b)
}
