// Package config reads, completes and checks ober.yaml, the daemon's
// configuration (schema in types.go, operator reference in SCHEMA.md).
//
// Work happens in three steps that fail for different reasons:
//
//  1. Parse decodes the YAML strictly. A key the schema does not know, a
//     value of the wrong type or a key given twice is reported with its
//     path ("services[0].prot") and line, before anything else is looked at.
//  2. ApplyDefaults fills every zero value that has a default, and Validate
//     checks everything that can be checked without the network: ranges,
//     names, clashes between services, certificate files and keys,
//     whitelist syntax, CPU numbers. Parse runs both.
//  3. Resolve looks up backend host names and whitelist names. It is kept
//     apart because DNS can be slow or briefly broken while the file itself
//     is fine, and because `ober` must be able to check a file offline.
//
// Every problem is a *FieldError; Parse, Validate and Resolve report all of
// them at once, joined with errors.Join, one per line.
package config
