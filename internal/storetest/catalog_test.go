package storetest

import (
	"net/http"
	"strings"
	"testing"

	"widget-store/internal/loadgen"
)

// CatalogProduct is one object of GET /products (GET /product's shape).
type CatalogProduct struct {
	ProductID   int     `json:"product_id"`
	Product     string  `json:"product"`
	Description string  `json:"description"`
	Inventory   int     `json:"inventory"`
	Price       float64 `json:"price"`
}

// Catalog reads GET /products as a map by product id.
func Catalog(t testing.TB, base string) map[int]CatalogProduct {
	t.Helper()
	out := map[int]CatalogProduct{}
	for _, p := range GetJSON[[]CatalogProduct](t, base+"/products") {
		out[p.ProductID] = p
	}
	return out
}

// TestCatalog: a new store sells several products, product 1 the reference
// store's widget as before; each has a picture the store serves itself; an
// operator restocks one product without touching the others.
func TestCatalog(t *testing.T) {
	ForEachDB(t, func(t *testing.T, db *loadgen.Database) {
		st := Start(t, db)
		base := st.Base()

		t.Run("seeded catalog", func(t *testing.T) {
			c := Catalog(t, base)
			if len(c) < 4 {
				t.Fatalf("GET /products: %d products, want at least 4: %+v", len(c), c)
			}
			p1 := GetJSON[CatalogProduct](t, base+"/product")
			want := CatalogProduct{1, "Premium Quality Widget", "Enhance your productivity with our top-rated widgets!", 100, 99.99}
			if p1 != want || c[1] != want {
				t.Fatalf("product 1: GET /product %+v, GET /products %+v; want %+v", p1, c[1], want)
			}
			for id, p := range c {
				if p.Product == "" || p.Description == "" || p.Price <= 0 || p.Inventory <= 0 {
					t.Errorf("product %d is not sellable: %+v", id, p)
				}
			}
		})

		t.Run("pictures are the store's own", func(t *testing.T) {
			page := MustCall(t, "GET", base+"/", http.StatusOK)
			for _, pic := range []string{"premium", "pocket", "promax", "carekit"} {
				path := "/static/products/" + pic + ".svg"
				if !strings.Contains(page, path) {
					t.Errorf("the store page shows no %s", path)
				}
				resp, err := http.Get(base + path)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/svg+xml" {
					t.Errorf("GET %s: %d %s", path, resp.StatusCode, resp.Header.Get("Content-Type"))
				}
			}
		})

		t.Run("restock one product", func(t *testing.T) {
			before := Catalog(t, base)
			MustCall(t, "POST", base+"/restock?product_id=3&inventory=7", http.StatusOK)
			after := Catalog(t, base)
			for id, p := range before {
				want := p
				if id == 3 {
					want.Inventory = 7
				}
				if after[id] != want {
					t.Errorf("after restocking product 3: product %d is %+v, want %+v", id, after[id], want)
				}
			}
			MustCall(t, "POST", base+"/restock?inventory=42", http.StatusOK)
			if got := Catalog(t, base); got[1].Inventory != 42 || got[3].Inventory != 7 {
				t.Errorf("restock without product_id: product 1 has %d (want 42), product 3 %d (want 7)", got[1].Inventory, got[3].Inventory)
			}
			MustCall(t, "POST", base+"/restock?product_id=999&inventory=5", http.StatusNotFound)
			MustCall(t, "POST", base+"/restock?product_id=abc&inventory=5", http.StatusBadRequest)
			MustCall(t, "POST", base+"/restock?product_id=0", http.StatusBadRequest)
		})
	})
}
