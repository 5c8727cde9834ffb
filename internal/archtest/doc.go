// Package archtest holds no code: its test checks that the packages
// import each other in the directions docs/ARCHITECTURE.md draws, so
// that the map stays true as the code grows.
package archtest
