package web

import (
	"log/slog"
	"net"
	"net/netip"
)

// LogExposure logs the store's first line: who can reach it, and, in demo
// mode (no ADMIN_TOKEN: crash and restock are open to whoever reaches it,
// see access.go), how to open it to the network safely. listenAddr is
// LISTEN_ADDR, already checked to be host:port; port is PORT.
func LogExposure(logger *slog.Logger, listenAddr, port string, cfg Config) {
	host, _, _ := net.SplitHostPort(listenAddr) // checked by the store's configuration
	loopback := false
	if a, err := netip.ParseAddr(host); err == nil {
		loopback = a.IsLoopback()
	} else if host == "localhost" {
		loopback = true
	}
	switch {
	case cfg.AdminToken == "" && loopback:
		logger.Info("demo mode: listening on " + listenAddr + ", this machine only; to open the store to the network set LISTEN_ADDR=:" + port +
			" and ADMIN_TOKEN (and PAYMENT_WEBHOOK_SECRET): without a token anyone who reaches it can crash or restock it (README: Running it in public)")
	case cfg.AdminToken == "":
		logger.Warn("demo mode on the network: LISTEN_ADDR=" + listenAddr + " without ADMIN_TOKEN lets anyone who reaches this store crash or restock it, and see every order; set ADMIN_TOKEN (README: Running it in public)")
	case cfg.WebhookSecret == "":
		logger.Warn("ADMIN_TOKEN is set but PAYMENT_WEBHOOK_SECRET is not: the payment webhook takes only the admin token, and pay links cannot be signed")
	default:
		logger.Info("hardened mode: listening on "+listenAddr, "hold_limit", cfg.HoldLimit, "trusted_proxies", len(cfg.TrustedProxies))
	}
}
