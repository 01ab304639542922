// Command tokenwarden is the product's binary, the one the image carries, with a subcommand per role:
// controller (the TokenPolicy controller) and issuer (the token endpoints). The dev mode and the load tool
// are in cmd/tokenwarden-dev, so that this binary links neither envtest nor the testing package.
package main
