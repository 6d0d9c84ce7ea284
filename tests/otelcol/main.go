// otelcol-evhost-test: a minimal OpenTelemetry Collector distribution for
// evhost's system tests only; it is never shipped. It is built the way the
// collector builder (ocb) builds one, with just the OTLP receiver, the
// contrib file exporter and the contrib bearer token authenticator (for
// evhostd's [tracing] otlp_headers_file), so that tests check the spans evhostd exports
// against a real collector's OTLP/HTTP decoding rather than a mock's idea of
// it. scripts/otelcol builds it; tests/system/evhost_testlib.py (Collector)
// runs it on 127.0.0.1 and reads the spans back from the file exporter.
//
// All collector modules stay on one release (core v0.161.0 / v1.67.0,
// contrib v0.161.0); go.sum is complete, so the build needs no `go mod tidy`.
package main

import (
	"log"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"github.com/open-telemetry/opentelemetry-collector-contrib/extension/bearertokenauthextension"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	var f otelcol.Factories
	var err error
	f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory())
	if err != nil {
		return f, err
	}
	f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory())
	if err != nil {
		return f, err
	}
	f.Extensions, err = otelcol.MakeFactoryMap[extension.Factory](bearertokenauthextension.NewFactory())
	if err != nil {
		return f, err
	}
	// The collector refuses to start without a telemetry factory.
	f.Telemetry = otelconftelemetry.NewFactory()
	return f, nil
}

func main() {
	info := component.BuildInfo{
		Command:     "otelcol-evhost-test",
		Description: "OpenTelemetry Collector for evhost's system tests",
		Version:     "0.161.0",
	}
	set := otelcol.CollectorSettings{
		BuildInfo: info,
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{fileprovider.NewFactory()},
				DefaultScheme:     "file",
			},
		},
	}
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		log.Fatal(err)
	}
}
