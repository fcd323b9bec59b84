package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/pelletier/go-toml/v2"
)

// config holds every setting; the TOML file uses the same names as the flags
// (with underscores), and a flag given on the command line wins over the file.
type config struct {
	Address        string `toml:"address"`
	Root           string `toml:"root"`
	LogLevel       string `toml:"log_level"`
	MetricsAddress string `toml:"metrics_address"`
	QuotaMode      string `toml:"quota_mode"`
	RemapIDs       bool   `toml:"remap_ids"`
}

func defaultConfig() config {
	return config{
		Address:   "/run/containerd-tupper/tupper.sock",
		Root:      "/var/lib/containerd-tupper",
		LogLevel:  "info",
		QuotaMode: "auto",
		RemapIDs:  true,
	}
}

type options struct {
	config
	configPath string
	version    bool
}

func parseFlags(args []string) (options, error) {
	o := options{config: defaultConfig()}
	fs := flag.NewFlagSet("containerd-tupper-snapshotter", flag.ContinueOnError)
	fs.StringVar(&o.Address, "address", o.Address, "unix socket to serve containerd's snapshots API on")
	fs.StringVar(&o.Root, "root", o.Root, "snapshotter state directory; must be on btrfs")
	fs.StringVar(&o.configPath, "config", "", "TOML file with the same keys as these flags (address, root, log_level, metrics_address, quota_mode, remap_ids)")
	fs.StringVar(&o.LogLevel, "log-level", o.LogLevel, "trace, debug, info, warn or error")
	fs.StringVar(&o.MetricsAddress, "metrics-address", "", "host:port for Prometheus /metrics (off when empty)")
	fs.StringVar(&o.QuotaMode, "quota-mode", o.QuotaMode, "btrfs quotas for O(1) Usage and max-size: auto, simple, classic or off")
	fs.BoolVar(&o.RemapIDs, "remap-ids", o.RemapIDs, "map user-namespaced snapshots with idmapped mounts; must match capabilities = [\"remap-ids\"] in containerd's proxy_plugins entry")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.configPath == "" {
		return o, nil
	}
	b, err := os.ReadFile(o.configPath)
	if err != nil {
		return o, fmt.Errorf("reading config: %w", err)
	}
	dec := toml.NewDecoder(bytes.NewReader(b)).DisallowUnknownFields()
	if err := dec.Decode(&o.config); err != nil {
		var strict *toml.StrictMissingError
		if errors.As(err, &strict) {
			return o, fmt.Errorf("config %s: unknown keys:\n%s", o.configPath, strict.String())
		}
		return o, fmt.Errorf("config %s: %w", o.configPath, err)
	}
	// Flags given on the command line win over the file: parse them again.
	return o, fs.Parse(args)
}
