package export

import (
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
)

// TestCheck resolves feature selections and checks entity table schemas
// without any data: the views an export reads, in request order, or Run's
// error before it reads anything.
func TestCheck(t *testing.T) {
	r := testRegistry(t)
	str := func(name string) arrow.Field { return arrow.Field{Name: name, Type: arrow.BinaryTypes.String} }
	i64 := func(name string) arrow.Field { return arrow.Field{Name: name, Type: arrow.PrimitiveTypes.Int64} }
	ts := arrow.Field{Name: DefaultTimestampColumn, Type: arrow.FixedWidthTypes.Timestamp_us}
	schema := func(fs ...arrow.Field) *arrow.Schema { return arrow.NewSchema(fs, nil) }
	for _, c := range []struct {
		name   string
		opts   Options
		schema *arrow.Schema
		views  []string
		err    string
	}{
		{name: "service, no schema", opts: Options{Service: "all"}, views: []string{"by_user", "by_shop", "by_account", "user_last", "user_last_a", "user_qty"}},
		{name: "references in request order", opts: Options{Features: []string{"by_account:n_3m", "by_user:n_5m", "by_account:ok_last_3m"}},
			schema: schema(str("bank"), i64("account_no"), str("user_id"), ts), views: []string{"by_account", "by_user"}},
		{name: "renamed columns", opts: Options{Features: []string{"by_shop:*"}, KeyColumns: map[string]string{"shop_id": "shop"}, TimestampColumn: "at"},
			schema: schema(i64("shop"), arrow.Field{Name: "at", Type: arrow.PrimitiveTypes.Int64}), views: []string{"by_shop"}},
		{name: "unknown service", opts: Options{Service: "nope"}, err: `unknown feature service "nope"`},
		{name: "misspelt service", opts: Options{Service: "alll"}, err: `unknown feature service "alll" (did you mean "all"?)`},
		{name: "misspelt view", opts: Options{Features: []string{"by_usr:n_5m"}}, err: `unknown feature view "by_usr" in "by_usr:n_5m" (did you mean "by_user"?)`},
		{name: "misspelt feature", opts: Options{Features: []string{"by_user:n_5mm"}}, err: `unknown feature "n_5mm" in feature view "by_user" (did you mean "n_5m"?)`},
		{name: "online only", opts: Options{Features: []string{"not_offline:n"}}, err: `feature view "not_offline" is not kept offline (offline: false): it cannot be exported`},
		{name: "missing key column", opts: Options{Features: []string{"by_user:n_5m"}}, schema: schema(str("user"), ts),
			err: `entity table: no column "user_id" for join key "user_id" of entity "user" (columns: user, event_timestamp)`},
		{name: "named table", opts: Options{Features: []string{"by_user:n_5m"}, Entities: "rows.parquet"}, schema: schema(str("user_id")),
			err: `rows.parquet: no timestamp column "event_timestamp" (columns: user_id); name it with the timestamp column option`},
		{name: "key of the wrong type", opts: Options{Features: []string{"by_shop:n_2m"}}, schema: schema(str("shop_id"), ts),
			err: `entity table: column "shop_id" (join key "shop_id" of entity "shop", int64) has type utf8; want an integer type`},
		{name: "no registry", opts: Options{Service: "all"}, err: "no registry"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.name != "no registry" {
				c.opts.Registry = r
			}
			views, err := Check(c.opts, c.schema)
			if c.err != "" {
				if err == nil || err.Error() != c.err {
					t.Fatalf("error %v\nwant %s", err, c.err)
				}
				return
			}
			if err != nil || !slices.Equal(views, c.views) {
				t.Fatalf("views %v, %v; want %v", views, err, c.views)
			}
		})
	}
}
