package provider

import (
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// The providers PAYMENT_PROVIDER names.
const (
	NameStandIn = "standin" // the default: the store's own pay page, PROVIDER_URL's refunds
	NameStripe  = "stripe"
)

// Config is the payment provider's configuration: which provider, and what
// it needs. It is read in three moves, because the store's flags mirror its
// environment and win over it, and two defaults are the store's own address,
// known only once it listens:
//
//  1. ConfigFromEnv reads the environment (AddFlags then lets the flags
//     override it) and Check checks it: the store refuses to start with an
//     error that names the setting, and what is missing.
//  2. Listening fills in the defaults from the store's own address.
//  3. New makes the provider.
type Config struct {
	// Provider is PAYMENT_PROVIDER: standin (NameStandIn, the default: the
	// store's own pay page and PROVIDER_URL's refunds) or stripe (the
	// STRIPE_* settings below; README: Taking payments with Stripe).
	Provider string
	// URL is PROVIDER_URL, the stand-in's API the refund workflow calls,
	// without a trailing slash. Empty: the store's own stand-in,
	// <its address>/provider, set by Listening.
	URL string
	// StripeSecretKey (STRIPE_SECRET_KEY, sk_… or rk_…) and
	// StripeWebhookSecret (STRIPE_WEBHOOK_SECRET, whsec_…), both required
	// with PAYMENT_PROVIDER=stripe, are read from the environment only: a
	// flag's value shows in the process list. StripeAPIBase is
	// STRIPE_API_BASE, Stripe's API unless set (tests: stripe-mock), without
	// a trailing slash.
	StripeSecretKey, StripeWebhookSecret, StripeAPIBase string
	// PublicURL is PUBLIC_URL, where buyers' browsers reach the store
	// (Stripe sends them back to their order page there), without a trailing
	// slash. Empty: the store's own address, set by Listening.
	PublicURL string

	// self: PROVIDER_URL was not set, so the refunds go to the store's own
	// stand-in, which takes the ADMIN_TOKEN.
	self bool
}

// ConfigFromEnv reads the configuration from the environment (getenv), with
// the defaults; Check checks it.
func ConfigFromEnv(getenv func(string) string) Config {
	env := func(key, def string) string {
		if v := getenv(key); v != "" {
			return v
		}
		return def
	}
	return Config{
		Provider:            env("PAYMENT_PROVIDER", NameStandIn),
		URL:                 getenv("PROVIDER_URL"),
		StripeSecretKey:     getenv("STRIPE_SECRET_KEY"),
		StripeWebhookSecret: getenv("STRIPE_WEBHOOK_SECRET"),
		StripeAPIBase:       env("STRIPE_API_BASE", StripeDefaultAPI),
		PublicURL:           getenv("PUBLIC_URL"),
	}
}

// AddFlags defines on fs the flags that mirror the settings (not the
// secrets), each defaulting to what c holds (ConfigFromEnv's), so that a
// flag given wins over the environment once fs is parsed.
func (c *Config) AddFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.URL, "provider-url", c.URL, "the payment provider's API for refunds, http(s)://…; default: the store's own stand-in at /provider (env PROVIDER_URL)")
	fs.StringVar(&c.Provider, "payment-provider", c.Provider, "standin (the store's own pay page) or stripe (env PAYMENT_PROVIDER)")
	fs.StringVar(&c.StripeAPIBase, "stripe-api-base", c.StripeAPIBase, "Stripe's API, http(s)://… (env STRIPE_API_BASE)")
	fs.StringVar(&c.PublicURL, "public-url", c.PublicURL, "where buyers' browsers reach the store, such as https://shop.example; default the listener's address (env PUBLIC_URL)")
}

// Check checks the configuration, and trims the URLs' trailing slashes:
// each URL must be an absolute http or https URL; PAYMENT_PROVIDER standin
// or stripe; with stripe, the secret key and the webhook secret are
// required (each named when missing) and must look like what they are.
func (c *Config) Check() error {
	var err error
	if c.URL != "" {
		if c.URL, err = baseURL("PROVIDER_URL", c.URL); err != nil {
			return err
		}
	}
	if c.PublicURL != "" {
		if c.PublicURL, err = baseURL("PUBLIC_URL", c.PublicURL); err != nil {
			return err
		}
	}
	switch c.Provider {
	case NameStandIn:
		return nil
	case NameStripe:
	default:
		return fmt.Errorf("PAYMENT_PROVIDER %q: want standin (the store's own pay page) or stripe", c.Provider)
	}
	var missing []string
	if c.StripeSecretKey == "" {
		missing = append(missing, "STRIPE_SECRET_KEY (sk_test_… from Stripe's dashboard, Developers → API keys)")
	}
	if c.StripeWebhookSecret == "" {
		missing = append(missing, "STRIPE_WEBHOOK_SECRET (whsec_…, from the webhook endpoint, or printed by `stripe listen`)")
	}
	if len(missing) > 0 {
		return fmt.Errorf("PAYMENT_PROVIDER=stripe needs %s", strings.Join(missing, " and "))
	}
	if !strings.HasPrefix(c.StripeSecretKey, "sk_") && !strings.HasPrefix(c.StripeSecretKey, "rk_") {
		return errors.New("STRIPE_SECRET_KEY: want a secret key, sk_test_… or sk_live_… (or a restricted key, rk_…); a publishable key (pk_…) cannot create payments")
	}
	if !strings.HasPrefix(c.StripeWebhookSecret, "whsec_") {
		return errors.New("STRIPE_WEBHOOK_SECRET: want the endpoint's signing secret, whsec_…")
	}
	c.StripeAPIBase, err = baseURL("STRIPE_API_BASE", c.StripeAPIBase)
	return err
}

// Listening is the configuration once the store listens at self
// (http://host:port, how the store reaches itself): PROVIDER_URL unset is
// the store's own stand-in at self/provider (under the supervisor the child
// inherits the parent's socket, so this is the port clients use too), and
// PUBLIC_URL unset is self.
func (c Config) Listening(self string) Config {
	if c.URL == "" {
		c.URL, c.self = self+"/provider", true
	}
	if c.PublicURL == "" {
		c.PublicURL = self
	}
	return c
}

// New makes the provider c names. adminToken is ADMIN_TOKEN, which the
// store's own stand-in takes as its API key.
func (c Config) New(adminToken string) Provider {
	httpClient := &http.Client{Timeout: CallTimeout}
	if c.Provider == NameStripe {
		return NewStripe(c.StripeSecretKey, c.StripeAPIBase, c.PublicURL, httpClient)
	}
	p := &StandIn{URL: c.URL, HTTP: httpClient}
	if c.self {
		p.Token = adminToken
	}
	return p
}

// StripeWebhook is the secret POST /webhooks/stripe verifies events
// with: "" unless Stripe is the provider (the route then answers 404).
func (c Config) StripeWebhook() string {
	if c.Provider != NameStripe {
		return ""
	}
	return c.StripeWebhookSecret
}

// baseURL checks setting name's URL s: an absolute http or https URL with a
// host, and no query or fragment (paths are appended to it). It returns it
// without a trailing slash. A password in it is never shown.
func baseURL(name, s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
		shown := s
		if err == nil && u.User != nil {
			shown = u.Redacted()
		} else if err != nil {
			shown = "(unparsable)"
		}
		return "", fmt.Errorf("%s %q: want an http:// or https:// URL with a host and no query, such as https://provider.example/v1", name, shown)
	}
	return strings.TrimRight(u.String(), "/"), nil
}
