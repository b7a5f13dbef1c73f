import Injector
import XCTest

/// The demangler's two forms: with the parameter list (what reports show) and without it (what
/// patterns match); names that are not mangled are left alone.
final class DemangleTests: XCTestCase {
    func testCxxNamesWithAndWithoutTheirParameterLists() {
        XCTAssertEqual(Demangle.full("_ZN4shop6Server6handleEl"), "shop::Server::handle(long)")
        XCTAssertEqual(Demangle.base("_ZN4shop6Server6handleEl"), "shop::Server::handle")
        XCTAssertEqual(Demangle.full("_ZNKSt7__cxx1112basic_stringIcSt11char_traitsIcESaIcEE4findEPKcmm"),
                       "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >::find(char const*, unsigned long, unsigned long) const")
        // A template function's return type is shown, but not matched.
        XCTAssertEqual(Demangle.base("_ZSt4endlIcSt11char_traitsIcEERSt13basic_ostreamIT_T0_ES6_"), "std::endl<char, std::char_traits<char> >")
        XCTAssertEqual(Demangle.full("_ZN3foo3barEv.cold"), "foo::bar() [clone .cold]")
    }

    func testRustNamesLegacyAndV0() {
        XCTAssertEqual(Demangle.full("_ZN4core3fmt9Formatter3pad17h0123456789abcdefE"), "core::fmt::Formatter::pad", "the hash is left out")
        XCTAssertEqual(Demangle.base("_RNvNtCs1234_7mycrate6server6handle"), "mycrate::server::handle")
    }

    func testNamesThatAreNotMangled() {
        XCTAssertNil(Demangle.full("main"))
        XCTAssertNil(Demangle.base("__libc_malloc"))
        XCTAssertNil(Demangle.full("_Zgarbage"))
        XCTAssertNil(Demangle.full("_start"))
    }
}
