package provider

import (
	"flag"
	"strings"
	"testing"
)

// TestConfigCheck is the one verdict on the payment settings: each bad one
// is refused with an error that names the setting and what it wants (and
// never shows a password); good ones come out with their URLs trimmed.
func TestConfigCheck(t *testing.T) {
	stripe := map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_x"}
	with := func(base map[string]string, kv ...string) map[string]string {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			env[kv[i]] = kv[i+1]
		}
		return env
	}
	t.Run("refused", func(t *testing.T) {
		for _, tc := range []struct {
			name    string
			env     map[string]string
			want    string // a substring of the error
			notWant string // never in the error
		}{
			{"unknown provider", with(nil, "PAYMENT_PROVIDER", "paypal"), `PAYMENT_PROVIDER "paypal": want standin (the store's own pay page) or stripe`, ""},
			{"stripe without either secret names both", with(nil, "PAYMENT_PROVIDER", "stripe"),
				"PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY (sk_test_… from Stripe's dashboard, Developers → API keys) and STRIPE_WEBHOOK_SECRET (whsec_…", ""},
			{"stripe without the webhook secret", with(stripe, "STRIPE_WEBHOOK_SECRET", ""), "PAYMENT_PROVIDER=stripe needs STRIPE_WEBHOOK_SECRET (whsec_…", "STRIPE_SECRET_KEY"},
			{"stripe without the secret key", with(stripe, "STRIPE_SECRET_KEY", ""), "PAYMENT_PROVIDER=stripe needs STRIPE_SECRET_KEY (sk_test_…", "STRIPE_WEBHOOK_SECRET"},
			{"a publishable key", with(stripe, "STRIPE_SECRET_KEY", "pk_test_123"), "STRIPE_SECRET_KEY: want a secret key, sk_test_… or sk_live_… (or a restricted key, rk_…)", ""},
			{"a webhook secret that is not one", with(stripe, "STRIPE_WEBHOOK_SECRET", "sk_test_123"), "STRIPE_WEBHOOK_SECRET: want the endpoint's signing secret, whsec_…", ""},
			{"stripe API base scheme", with(stripe, "STRIPE_API_BASE", "ftp://x"), `STRIPE_API_BASE "ftp://x": want an http:// or https:// URL`, ""},
			{"stripe API base with a query", with(stripe, "STRIPE_API_BASE", "https://api.example?x=1"), `STRIPE_API_BASE "https://api.example?x=1"`, ""},
			{"public URL without a scheme", with(nil, "PUBLIC_URL", "shop.example"), `PUBLIC_URL "shop.example": want an http:// or https:// URL`, ""},
			{"public URL with a fragment", with(nil, "PUBLIC_URL", "https://shop.example/#x"), `PUBLIC_URL "https://shop.example/#x"`, ""},
			{"public URL checked with stripe too", with(stripe, "PUBLIC_URL", "shop.example"), `PUBLIC_URL "shop.example"`, ""},
			{"provider URL scheme", with(nil, "PROVIDER_URL", "ftp://provider.example/v1"), `PROVIDER_URL "ftp://provider.example/v1": want an http:// or https:// URL`, ""},
			{"provider URL without a host", with(nil, "PROVIDER_URL", "http:///refunds"), `PROVIDER_URL "http:///refunds"`, ""},
			{"provider URL password hidden", with(nil, "PROVIDER_URL", "https://shop:s3cret@provider.example/v1?x=1"), `PROVIDER_URL "https://shop:xxxxx@provider.example/v1?x=1"`, "s3cret"},
			{"provider URL unparsable", with(nil, "PROVIDER_URL", "http://shop:s3cret@[::1"), `PROVIDER_URL "(unparsable)"`, "s3cret"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := ConfigFromEnv(func(k string) string { return tc.env[k] })
				err := c.Check()
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("Check: %v, want an error containing %q", err, tc.want)
				}
				if tc.notWant != "" && strings.Contains(err.Error(), tc.notWant) {
					t.Fatalf("Check: %v, which shows %q", err, tc.notWant)
				}
			})
		}
	})

	t.Run("accepted", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			env  map[string]string
			want Config
		}{
			{"nothing set: the stand-in", nil, Config{Provider: NameStandIn, StripeAPIBase: StripeDefaultAPI}},
			{"the stand-in ignores the Stripe settings", with(nil, "STRIPE_SECRET_KEY", "pk_x", "STRIPE_API_BASE", "nonsense"),
				Config{Provider: NameStandIn, StripeSecretKey: "pk_x", StripeAPIBase: "nonsense"}},
			{"stripe, URLs trimmed", with(stripe, "STRIPE_API_BASE", "http://127.0.0.1:1234/", "PUBLIC_URL", "https://shop.example/", "PROVIDER_URL", "https://provider.example/v1/"),
				Config{Provider: NameStripe, URL: "https://provider.example/v1", StripeSecretKey: "sk_test_123", StripeWebhookSecret: "whsec_x", StripeAPIBase: "http://127.0.0.1:1234", PublicURL: "https://shop.example"}},
			{"a restricted key", with(stripe, "STRIPE_SECRET_KEY", "rk_live_1"),
				Config{Provider: NameStripe, StripeSecretKey: "rk_live_1", StripeWebhookSecret: "whsec_x", StripeAPIBase: StripeDefaultAPI}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				c := ConfigFromEnv(func(k string) string { return tc.env[k] })
				if err := c.Check(); err != nil {
					t.Fatalf("Check: %v", err)
				}
				if c != tc.want {
					t.Fatalf("got %+v, want %+v", c, tc.want)
				}
			})
		}
	})

	t.Run("a flag wins over the environment; the secrets have none", func(t *testing.T) {
		c := ConfigFromEnv(func(k string) string { return with(stripe, "PUBLIC_URL", "https://env.example")[k] })
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		c.AddFlags(fs)
		if err := fs.Parse([]string{"-payment-provider", "standin", "-public-url", "https://flag.example/"}); err != nil {
			t.Fatal(err)
		}
		if err := c.Check(); err != nil || c.Provider != NameStandIn || c.PublicURL != "https://flag.example" {
			t.Fatalf("got %+v, %v; want the stand-in at https://flag.example", c, err)
		}
		for _, secret := range []string{"stripe-secret-key", "stripe-webhook-secret"} {
			if fs.Lookup(secret) != nil {
				t.Errorf("-%s is a flag: a secret's value would show in the process list", secret)
			}
		}
	})
}

// TestConfigNew: what the store makes of the settings once it listens.
func TestConfigNew(t *testing.T) {
	const self = "http://127.0.0.1:8080"
	standIn := func(t *testing.T, env map[string]string) *StandIn {
		t.Helper()
		c := ConfigFromEnv(func(k string) string { return env[k] })
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
		p, ok := c.Listening(self).New("admin-token").(*StandIn)
		if !ok {
			t.Fatalf("New made %T, want the stand-in", p)
		}
		return p
	}
	t.Run("the store's own stand-in takes the admin token", func(t *testing.T) {
		if p := standIn(t, nil); p.URL != self+"/provider" || p.Token != "admin-token" {
			t.Fatalf("got %+v", p)
		}
	})
	t.Run("another stand-in is never sent the admin token", func(t *testing.T) {
		if p := standIn(t, map[string]string{"PROVIDER_URL": "https://provider.example/v1"}); p.URL != "https://provider.example/v1" || p.Token != "" {
			t.Fatalf("got %+v", p)
		}
	})
	t.Run("stripe, its webhook secret, and PUBLIC_URL's default", func(t *testing.T) {
		env := map[string]string{"PAYMENT_PROVIDER": "stripe", "STRIPE_SECRET_KEY": "sk_test_123", "STRIPE_WEBHOOK_SECRET": "whsec_x"}
		c := ConfigFromEnv(func(k string) string { return env[k] })
		if err := c.Check(); err != nil {
			t.Fatal(err)
		}
		c = c.Listening(self)
		p, ok := c.New("admin-token").(*Stripe)
		if !ok || p.publicURL != self || c.StripeWebhook() != "whsec_x" {
			t.Fatalf("New made %T %+v, webhook secret %q", p, p, c.StripeWebhook())
		}
		if c := ConfigFromEnv(func(k string) string { return map[string]string{"STRIPE_WEBHOOK_SECRET": "whsec_x"}[k] }); c.StripeWebhook() != "" {
			t.Fatalf("the stand-in's Stripe webhook secret is %q, want none (the route answers 404)", c.StripeWebhook())
		}
	})
}
