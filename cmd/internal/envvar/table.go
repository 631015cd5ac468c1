package envvar

import "strings"

// Doc is one row of a configuration table.
type Doc struct{ Name, Default, Meaning string }

// Docs returns the documentation of vars, in order. Default is
// DefaultDoc, else Default in backquotes, else empty.
func Docs(vars []Var) []Doc {
	docs := make([]Doc, len(vars))
	for i, v := range vars {
		def := v.DefaultDoc
		if def == "" && v.Default != "" {
			def = "`" + v.Default + "`"
		}
		docs[i] = Doc{Name: v.Name, Default: def, Meaning: v.Doc}
	}
	return docs
}

// Table renders docs as the README's Markdown table: variable, default
// (— for none) and meaning, one row per variable, ending with a newline.
func Table(docs []Doc) string {
	var b strings.Builder
	b.WriteString("| variable | default | meaning |\n|---|---|---|\n")
	for _, d := range docs {
		def := d.Default
		if def == "" {
			def = "—"
		}
		b.WriteString("| `" + d.Name + "` | " + def + " | " + d.Meaning + " |\n")
	}
	return b.String()
}

// TableIn returns the Markdown table in text that starts with the header
// Table writes and runs to the first line that is not a table row, after
// the first occurrence of after (the empty string: the start of text).
// ok is false if there is no such table.
func TableIn(text, after string) (table string, ok bool) {
	_, rest, found := strings.Cut(text, after)
	if !found {
		return "", false
	}
	const header = "| variable | default | meaning |\n"
	i := strings.Index(rest, header)
	if i < 0 {
		return "", false
	}
	rest = rest[i:]
	end := 0
	for end < len(rest) {
		nl := strings.IndexByte(rest[end:], '\n')
		if nl < 0 || !strings.HasPrefix(rest[end:], "|") {
			break
		}
		end += nl + 1
	}
	return rest[:end], true
}
